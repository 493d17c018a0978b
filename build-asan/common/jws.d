build-asan/common/jws.o: common/jws.c common/jws.h common/util.h
common/jws.h:
common/util.h:
