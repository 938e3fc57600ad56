/* bind.h — a router over a configuration, as the pool binds one (backend objects, pools). */
#ifndef LG_TEST_BIND_H
#define LG_TEST_BIND_H

#include "core/config.h"
#include "inference/backend.h"
#include "inference/router.h"

#include <check.h>

static struct backends *tb_reg;

static inline struct router *tb_router(struct config *c, router_grant_fn grant, void *arg)
{
    tb_reg = backends_new();
    ck_assert(tb_reg && backends_bind(tb_reg, c) == 0);
    struct router *r = router_new(grant, arg);
    ck_assert(r && router_bind(r, c) == 0);
    router_apply(r, c);
    return r;
}

static inline void tb_free(struct router *r, struct config *c)
{
    router_unbind(r, c);
    router_free(r);
    backends_unbind(tb_reg, c);
    backends_free(tb_reg);
    tb_reg = NULL;
    config_free(c);
}

#endif
