build-asan/sandbox/faults.o: sandbox/faults.c sandbox/faults.h
sandbox/faults.h:
