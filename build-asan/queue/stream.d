build-asan/queue/stream.o: queue/stream.c queue/stream.h queue/redis.h \
 common/util.h
queue/stream.h:
queue/redis.h:
common/util.h:
