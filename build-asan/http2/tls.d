build-asan/http2/tls.o: http2/tls.c http2/tls.h common/log.h \
 common/util.h
http2/tls.h:
common/log.h:
common/util.h:
