build-asan/common/push.o: common/push.c common/push.h
common/push.h:
