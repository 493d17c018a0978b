build-asan/common/certgen.o: common/certgen.c common/certgen.h
common/certgen.h:
