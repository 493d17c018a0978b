build-asan/apns/payload.o: apns/payload.c apns/payload.h common/util.h
apns/payload.h:
common/util.h:
