/*
 * An nghttp2 allocator (nghttp2_mem) with free lists per size class, for
 * the sessions of one libuv loop: varseld's HTTP/2 client pools
 * (http2/client.c, one per pool) and varsel-sandbox's server (one per
 * sbx_server).
 *
 * Why. nghttp2 allocates and frees about six small blocks per request
 * (stream, outbound item, frame and header buffers); with two thousand
 * requests in flight glibc's per-thread cache overflows and most of them
 * take malloc's slow paths. Blocks of up to 4 KB are kept on free lists
 * per power-of-two size class instead, up to NG_CACHE_BYTES per allocator,
 * so what is kept is bounded by the high-water mark. Under
 * AddressSanitizer nothing is kept, so it still sees every use after free.
 *
 * Not thread-safe: one allocator serves one loop. Blocks must be freed with
 * the allocator that made them (each carries a small header with its size
 * class). A zeroed struct ng_alloc is ready to use; ng_alloc_release frees
 * the cached blocks (blocks still in use stay valid and may be freed later
 * through ng_free, which then caches them again).
 */
#ifndef VARSEL_NGALLOC_H
#define VARSEL_NGALLOC_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>

#define NG_CLASSES      8                  /* 32 B .. 4 KB */
#if defined(__SANITIZE_ADDRESS__)
#define NG_CACHE_BYTES  0
#else
#define NG_CACHE_BYTES  (4u << 20)
#endif

struct ng_hdr {
    size_t cls;                    /* size class, NG_CLASSES = plain malloc */
    size_t size;                   /* usable bytes */
};

struct ng_alloc {
    void *free_list[NG_CLASSES];   /* linked through the blocks' first word */
    size_t cached;                 /* bytes on the lists */
};

/* nghttp2_mem's functions; |ud| is the struct ng_alloc. ng_malloc returns
 * NULL when malloc fails (nghttp2 reports NGHTTP2_ERR_NOMEM). */
void *ng_malloc(size_t size, void *ud);
void ng_free(void *ptr, void *ud);
void *ng_calloc(size_t nmemb, size_t size, void *ud);
void *ng_realloc(void *ptr, size_t size, void *ud);

/* The nghttp2_mem for |a| (for nghttp2_session_*_new3). */
nghttp2_mem ng_alloc_mem(struct ng_alloc *a);

/* Free every cached block; |a| stays usable. */
void ng_alloc_release(struct ng_alloc *a);

#endif
