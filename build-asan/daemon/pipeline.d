build-asan/daemon/pipeline.o: daemon/pipeline.c daemon/pipeline.h \
 queue/redis.h apns/client.h common/push.h apns/payload.h common/log.h \
 common/util.h daemon/templates.h queue/event.h queue/receipts.h \
 queue/registry.h queue/stream.h
daemon/pipeline.h:
queue/redis.h:
apns/client.h:
common/push.h:
apns/payload.h:
common/log.h:
common/util.h:
daemon/templates.h:
queue/event.h:
queue/receipts.h:
queue/registry.h:
queue/stream.h:
