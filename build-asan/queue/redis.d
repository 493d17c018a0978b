build-asan/queue/redis.o: queue/redis.c queue/redis.h common/log.h \
 common/util.h
queue/redis.h:
common/log.h:
common/util.h:
