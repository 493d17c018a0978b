build-asan/sandbox/tokens.o: sandbox/tokens.c sandbox/tokens.h \
 common/log.h common/util.h
sandbox/tokens.h:
common/log.h:
common/util.h:
