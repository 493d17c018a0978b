build-asan/http2/client.o: http2/client.c http2/client.h common/log.h \
 common/util.h http2/tls.h
http2/client.h:
common/log.h:
common/util.h:
http2/tls.h:
