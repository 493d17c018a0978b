build-asan/tests/unit/test_tls.o: tests/unit/test_tls.c tests/unit/test.h \
 common/certgen.h http2/tls.h
tests/unit/test.h:
common/certgen.h:
http2/tls.h:
