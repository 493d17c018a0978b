build-asan/queue/receipts.o: queue/receipts.c queue/receipts.h \
 queue/redis.h common/util.h
queue/receipts.h:
queue/redis.h:
common/util.h:
