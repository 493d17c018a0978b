/*
 * nghttp2 allocator with per-size-class free lists (see http2/ngalloc.h
 * for why).
 */
#include "http2/ngalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *ng_malloc(size_t size, void *ud)
{
    struct ng_alloc *a = ud;
    size_t cls = 0;
    while (cls < NG_CLASSES && ((size_t)32 << cls) < size)
        cls++;
    if (cls < NG_CLASSES && a->free_list[cls] != NULL) {
        void *blk = a->free_list[cls];
        memcpy(&a->free_list[cls], blk, sizeof(void *));
        a->cached -= (size_t)32 << cls;
        return blk;
    }
    size_t usable = cls < NG_CLASSES ? (size_t)32 << cls : size;
    struct ng_hdr *h = malloc(sizeof *h + usable);
    if (h == NULL)
        return NULL;  /* nghttp2 reports NGHTTP2_ERR_NOMEM */
    h->cls = cls;
    h->size = usable;
    return h + 1;
}

void ng_free(void *ptr, void *ud)
{
    struct ng_alloc *a = ud;
    if (ptr == NULL)
        return;
    struct ng_hdr *h = (struct ng_hdr *)ptr - 1;
    if (h->cls < NG_CLASSES && a->cached + h->size <= NG_CACHE_BYTES) {
        memcpy(ptr, &a->free_list[h->cls], sizeof(void *));
        a->free_list[h->cls] = ptr;
        a->cached += h->size;
        return;
    }
    free(h);
}

void *ng_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size != 0 && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = ng_malloc(nmemb * size, ud);
    if (p != NULL)
        memset(p, 0, nmemb * size);
    return p;
}

void *ng_realloc(void *ptr, size_t size, void *ud)
{
    if (ptr == NULL)
        return ng_malloc(size, ud);
    struct ng_hdr *h = (struct ng_hdr *)ptr - 1;
    if (size <= h->size && size > 0)
        return ptr;
    void *n = ng_malloc(size, ud);
    if (n == NULL)
        return NULL;
    memcpy(n, ptr, h->size < size ? h->size : size);
    ng_free(ptr, ud);
    return n;
}

nghttp2_mem ng_alloc_mem(struct ng_alloc *a)
{
    return (nghttp2_mem){ a, ng_malloc, ng_free, ng_calloc, ng_realloc };
}

void ng_alloc_release(struct ng_alloc *a)
{
    for (int c = 0; c < NG_CLASSES; c++) {
        void *blk = a->free_list[c];
        while (blk != NULL) {
            void *next;
            memcpy(&next, blk, sizeof next);
            free((struct ng_hdr *)blk - 1);
            blk = next;
        }
        a->free_list[c] = NULL;
    }
    a->cached = 0;
}
