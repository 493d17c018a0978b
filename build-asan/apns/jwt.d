build-asan/apns/jwt.o: apns/jwt.c apns/jwt.h common/jws.h common/log.h \
 common/util.h
apns/jwt.h:
common/jws.h:
common/log.h:
common/util.h:
