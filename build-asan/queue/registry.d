build-asan/queue/registry.o: queue/registry.c queue/registry.h \
 queue/event.h queue/redis.h common/log.h common/util.h
queue/registry.h:
queue/event.h:
queue/redis.h:
common/log.h:
common/util.h:
