build-asan/sandbox/apns.o: sandbox/apns.c sandbox/apns.h \
 sandbox/request.h sandbox/tokens.h common/jws.h common/util.h \
 /usr/include/cjson/cJSON.h
sandbox/apns.h:
sandbox/request.h:
sandbox/tokens.h:
common/jws.h:
common/util.h:
/usr/include/cjson/cJSON.h:
