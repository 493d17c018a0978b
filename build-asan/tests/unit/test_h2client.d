build-asan/tests/unit/test_h2client.o: tests/unit/test_h2client.c \
 tests/unit/test.h common/certgen.h common/log.h common/util.h \
 http2/client.h http2/tls.h tests/unit/h2_testserver.h \
 tests/unit/h2_testserver.c
tests/unit/test.h:
common/certgen.h:
common/log.h:
common/util.h:
http2/client.h:
http2/tls.h:
tests/unit/h2_testserver.h:
tests/unit/h2_testserver.c:
