build-asan/queue/event.o: queue/event.c queue/event.h common/util.h
queue/event.h:
common/util.h:
