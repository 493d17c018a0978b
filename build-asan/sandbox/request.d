build-asan/sandbox/request.o: sandbox/request.c sandbox/request.h
sandbox/request.h:
