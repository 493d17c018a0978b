build-asan/daemon/templates.o: daemon/templates.c daemon/templates.h \
 queue/event.h common/util.h
daemon/templates.h:
queue/event.h:
common/util.h:
