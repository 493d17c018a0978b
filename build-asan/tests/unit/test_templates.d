build-asan/tests/unit/test_templates.o: tests/unit/test_templates.c \
 tests/unit/test.h common/util.h daemon/templates.h queue/event.h
tests/unit/test.h:
common/util.h:
daemon/templates.h:
queue/event.h:
