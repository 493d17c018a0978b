build-asan/tests/unit/test_payload.o: tests/unit/test_payload.c \
 tests/unit/test.h apns/payload.h common/util.h
tests/unit/test.h:
apns/payload.h:
common/util.h:
