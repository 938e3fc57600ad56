/* Config parsing, validation, environment overrides, key lookup. */
#include "core/config.h"
#include "unit.h"

#include <string.h>

static const char *good = "[server]\n"
                          "listen = 127.0.0.1:9090   ; comment\n"
                          "max_body_bytes = 2048\n"
                          "[limits]\n"
                          "max_inflight = 7\n"
                          "[keys]\n"
                          "alice = sk-alice-0123456789\n"
                          "bob = sk-bob\n"
                          "[backend.a]\n"
                          "url = http://127.0.0.1:11434/\n"
                          "models = llama3.2, qwen2.5:7b ,x\n"
                          "max_concurrency = 3\n"
                          "[backend.b]\n"
                          "url = http://127.0.0.1:8000\n"
                          "models = x\n";

static int has_msg(const struct config_errors *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msgs[i], needle))
            return 1;
    return 0;
}

static struct config *dump_and_load(const struct config *c, struct config_errors *e)
{
    char *dump = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&dump, &len);
    ck_assert_ptr_nonnull(f);
    config_dump(c, f);
    fclose(f);
    struct config *again = config_load_string("dump.ini", dump, e);
    free(dump);
    return again;
}

/* max_connections_per_ip = auto (the default): none on loopback, max_connections / 8 (at
 * least 64) facing a network; a number as written. */
START_TEST(test_per_ip_auto)
{
    static const struct {
        const char *server;
        unsigned want;
    } cases[] = {
        {"listen = 0.0.0.0:9000\n", 1024},
        {"listen = 192.168.1.5:9000\nmax_connections = 100\n", 64},
        {"listen = 0.0.0.0:9000\nmax_connections = 20000\n", 2500},
        {"listen = 127.0.0.1:9000\n", 0},
        {"listen = 127.0.0.2:9000\n", 0},
        {"listen = [::1]:9000\n", 0},
        {"listen = localhost:9000\n", 0},
        {"listen = 0.0.0.0:9000\nmax_connections_per_ip = 5\n", 5},
        {"listen = 0.0.0.0:9000\nmax_connections_per_ip = 0\n", 0},
        {"listen = 127.0.0.1:9000\nmax_connections_per_ip = auto\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "[server]\n%s[backend.a]\nurl = http://127.0.0.1:1\nmodels = m\n",
                 cases[i].server);
        struct config_errors e = {0};
        struct config *c = config_load_string("p.ini", text, &e);
        ck_assert_msg(c != NULL, "%s: %s", cases[i].server, e.n ? e.msgs[0] : "");
        ck_assert_msg(c->max_connections_per_ip == cases[i].want, "%s: %u", cases[i].server,
                      c->max_connections_per_ip);
        config_free(c);
    }
    struct config_errors e = {0};
    ck_assert_ptr_null(config_load_string(
        "p.ini", "[server]\nmax_connections = auto\n[backend.a]\nurl = http://x:1\nmodels = m\n",
        &e)); /* only a key whose default is auto takes it */
    config_errors_release(&e);
}
END_TEST

START_TEST(test_good)
{
    struct config_errors e = {0};
    struct config *c = config_load_string("t.ini", good, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(e.n, 0);
    ck_assert_str_eq(c->listen_host, "127.0.0.1");
    ck_assert_uint_eq(c->listen_port, 9090);
    ck_assert_uint_eq(c->max_body_bytes, 2048);
    ck_assert_uint_eq(c->max_inflight, 7);
    ck_assert_uint_eq(c->queue_capacity, 1024); /* default */
    ck_assert_uint_eq(c->connect_ms, 5000);
    ck_assert(c->auth);
    ck_assert_uint_eq(c->n_keys, 2);
    ck_assert_uint_eq(c->n_backends, 2);
    ck_assert_str_eq(c->backends[0].url, "http://127.0.0.1:11434"); /* trailing / dropped */
    ck_assert_uint_eq(c->backends[0].models.n, 3);
    ck_assert_str_eq(c->backends[0].models.v[1], "qwen2.5:7b");
    ck_assert_uint_eq(c->backends[0].max_concurrency, 3);
    ck_assert_uint_eq(c->backends[1].max_concurrency, 4);
    ck_assert_uint_ge(c->workers, 1); /* 0 = cores */

    const struct cfg_backend *b[4];
    ck_assert_uint_eq(config_backends_for(c, "x", b, 4), 2);
    ck_assert_str_eq(b[0]->name, "a");
    ck_assert_str_eq(b[1]->name, "b");
    ck_assert_uint_eq(config_backends_for(c, "nope", b, 4), 0);

    ck_assert_str_eq(config_key_lookup(c, "sk-bob", 6), "bob");
    ck_assert_ptr_null(config_key_lookup(c, "sk-bo", 5));
    ck_assert_ptr_null(config_key_lookup(c, "sk-bobb", 7));
    ck_assert_ptr_null(config_key_lookup(c, "", 0));
    config_free(c);
}
END_TEST

/* [key.NAME] sections: limits with [limits]' defaults, a key given by its SHA-256, models. */
START_TEST(test_key_sections)
{
    static const char text[] =
        "[limits]\nkey_rpm = 100\nkey_max_concurrency = 3\n"
        "[keys]\nalice = sk-alice\n"
        "[key.alice]\nmax_concurrency = 1\npriority = high\nweight = 5\n"
        "[key.bob]\n" /* sha256("hello") */
        "key_sha256 = 2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824\n"
        "models = m1 , m2\ntpm = 0\n"
        "[key.carol]\nkey = sk-carol\nrpm = 0\n"
        "[backend.a]\nurl = http://127.0.0.1:1\nmodels = m1, m2, m3\n";
    struct config_errors e = {0};
    struct config *c = config_load_string("k.ini", text, &e);
    ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
    ck_assert_uint_eq(c->n_keys, 3);
    const struct cfg_key *a = config_key_find(c, "sk-alice", 8);
    const struct cfg_key *b = config_key_find(c, "hello", 5);
    const struct cfg_key *k = config_key_find(c, "sk-carol", 8);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(k);
    ck_assert_str_eq(a->name, "alice");
    ck_assert_str_eq(b->name, "bob");
    ck_assert_ptr_null(b->key);
    ck_assert_ptr_null(config_key_find(c, "hellO", 5));
    ck_assert_ptr_null(
        config_key_find(c, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 64));
    /* written, else [limits]' default */
    ck_assert_uint_eq(a->max_concurrency, 1);
    ck_assert_uint_eq(a->rpm, 100);
    ck_assert_uint_eq(b->max_concurrency, 3);
    ck_assert_uint_eq(k->rpm, 0);
    ck_assert_uint_eq(a->weight, 5);
    ck_assert_uint_eq(b->weight, 1);
    ck_assert_uint_eq(a->priority, PRIO_HIGH);
    ck_assert_uint_eq(b->priority, PRIO_NORMAL);
    ck_assert(config_key_allows(a, "m3"));
    ck_assert(config_key_allows(b, "m2"));
    ck_assert(!config_key_allows(b, "m3"));
    ck_assert(config_key_allows(NULL, "m3"));
    /* the dump: a section per key, the secrets masked, bob's hash kept */
    char *dump = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&dump, &len);
    config_dump(c, f);
    fclose(f);
    ck_assert_ptr_nonnull(
        strstr(dump, "[key.alice]\nkey = <8 bytes>\nmax_concurrency = 1\nrpm = 100\n"));
    ck_assert_ptr_nonnull(
        strstr(dump, "[key.bob]\nkey_sha256 = "
                     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"));
    ck_assert_ptr_nonnull(strstr(dump, "priority = high\n"));
    ck_assert_ptr_nonnull(strstr(dump, "models = m1, m2\n"));
    ck_assert_ptr_null(strstr(dump, "sk-"));
    free(dump);
    config_free(c);

    /* errors, with their lines */
    static const char bad[] =
        "[key.x]\nrpm = 5\n"
        "[key.y]\nkey_sha256 = 12\n"
        "[key.z]\npriority = urgent\nweight = 0\nlimit = 3\nkey = a\nkey = b\n"
        "[key.]\nrpm = 1\n"
        "[backend.a]\nurl = http://127.0.0.1:1\nmodels = m\n";
    c = config_load_string("b.ini", bad, &e);
    ck_assert_ptr_null(c);
    ck_assert(has_msg(&e, "b.ini:1: key 'x' has neither a value"));
    ck_assert(has_msg(&e, "b.ini:4: key_sha256 must be 64 hex digits"));
    ck_assert(has_msg(&e, "b.ini:6: 'urgent' is not one of high, normal, low"));
    ck_assert(has_msg(&e, "b.ini:7: 0 is out of range [1, 1000]"));
    ck_assert(
        has_msg(&e, "b.ini:8: unknown key 'limit' in a key section (known: key, key_sha256,"));
    ck_assert(has_msg(&e, "b.ini:10: API key 'z' is given twice"));
    ck_assert(has_msg(&e, "b.ini:12: key section needs a name"));
    config_errors_release(&e);
}
END_TEST

START_TEST(test_errors_have_lines)
{
    const char *bad = "[server]\n"            /* 1 */
                      "listen = nowhere\n"    /* 2 */
                      "bogus = 1\n"           /* 3 */
                      "[limits]\n"            /* 4 */
                      "max_inflight = 0\n"    /* 5 */
                      "queue_capacity = -3\n" /* 6 */
                      "[backend.x]\n"         /* 7 */
                      "models = m\n"          /* 8 */
                      "colour = red\n"        /* 9 */
                      "[backend.y]\n"         /* 10 */
                      "url = ftp://h\n";      /* 11 */
    struct config_errors e = {0};
    struct config *c = config_load_string("bad.ini", bad, &e);
    ck_assert_ptr_null(c);
    ck_assert(has_msg(&e, "bad.ini:2: "));
    ck_assert(has_msg(&e, "bad.ini:3: unknown key 'bogus'"));
    ck_assert(has_msg(&e, "bad.ini:5: 0 is out of range"));
    ck_assert(has_msg(&e, "bad.ini:6: "));
    ck_assert(has_msg(&e, "bad.ini:9: unknown key 'colour'"));
    ck_assert(has_msg(&e, "bad.ini:11: url 'ftp://h'"));
    ck_assert(has_msg(&e, "bad.ini:7: [backend.x] has no url"));
    ck_assert(has_msg(&e, "bad.ini:10: [backend.y] has no models"));
    config_errors_release(&e);
}
END_TEST

START_TEST(test_syntax_and_empty)
{
    struct config_errors e = {0};
    ck_assert_ptr_null(config_load_string("s.ini", "[server\nlisten\n", &e));
    ck_assert(has_msg(&e, "s.ini:1: syntax error"));
    ck_assert(has_msg(&e, "no [backend.NAME] section"));
    config_errors_release(&e);

    /* an empty [keys] section must not silently turn auth off */
    ck_assert_ptr_null(
        config_load_string("k.ini", "[keys]\n[backend.a]\nurl = http://h:1\nmodels = m\n", &e));
    ck_assert(has_msg(&e, "[keys] is present but empty"));
    config_errors_release(&e);

    ck_assert_ptr_null(config_load_string(
        "d.ini", "[keys]\na = k\nb = k\n[backend.a]\nurl = http://h:1\nmodels = m\n", &e));
    ck_assert(has_msg(&e, "d.ini:3: keys 'a' and 'b' have the same value"));
    config_errors_release(&e);
}
END_TEST

START_TEST(test_env_override)
{
    struct config_errors e = {0};
    setenv("LLMGATE_SERVER_LISTEN", "[::1]:7000", 1);
    setenv("LLMGATE_LIMITS_MAX_INFLIGHT", "42", 1);
    setenv("LLMGATE_BACKEND_A_MAX_CONCURRENCY", "9", 1);
    struct config *c = config_load_string("t.ini", good, &e);
    unsetenv("LLMGATE_SERVER_LISTEN");
    unsetenv("LLMGATE_LIMITS_MAX_INFLIGHT");
    unsetenv("LLMGATE_BACKEND_A_MAX_CONCURRENCY");
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->listen_host, "::1");
    ck_assert_uint_eq(c->listen_port, 7000);
    ck_assert_uint_eq(c->max_inflight, 42);
    ck_assert_uint_eq(c->backends[0].max_concurrency, 9);
    config_free(c);

    setenv("LLMGATE_TIMEOUTS_REQUEST_S", "soon", 1);
    c = config_load_string("t.ini", good, &e);
    unsetenv("LLMGATE_TIMEOUTS_REQUEST_S");
    ck_assert_ptr_null(c);
    ck_assert(has_msg(&e, "env LLMGATE_TIMEOUTS_REQUEST_S: 'soon' is not a non-negative integer"));
    config_errors_release(&e);
}
END_TEST

START_TEST(test_long_line)
{
    char text[600];
    memset(text, 'x', sizeof(text));
    memcpy(text, "[server]\nlisten = ", 18);
    text[sizeof(text) - 1] = '\0';
    struct config_errors e = {0};
    ck_assert_ptr_null(config_load_string("l.ini", text, &e));
    ck_assert(has_msg(&e, "l.ini:2: line longer than"));
    config_errors_release(&e);
}
END_TEST

/* The limit is 198 bytes before the newline, for every line: a last line without one could
 * have 198, any other line only 197, and the dump of the first (with a newline) did not load. */
START_TEST(test_line_limit)
{
    char text[400], host[200];
    memset(host, 'h', 188);
    host[188] = '\0'; /* "listen=" + 188 + ":99" = 198 bytes */
    struct config_errors e = {0};
    for (int newline = 0; newline < 2; newline++) {
        snprintf(text, sizeof(text),
                 "[backend.a]\nurl = http://h:1\nmodels = m\n[server]\nlisten=%s:99%s", host,
                 newline ? "\n" : "");
        struct config *c = config_load_string("l.ini", text, &e);
        ck_assert_ptr_nonnull(c);
        struct config *again = dump_and_load(c, &e);
        ck_assert_ptr_nonnull(again);
        ck_assert_str_eq(again->listen_host, host);
        config_free(again);
        config_free(c);
    }
    snprintf(text, sizeof(text), "[server]\nlisten=%sh:99\n", host);
    ck_assert_ptr_null(config_load_string("l.ini", text, &e));
    ck_assert(has_msg(&e, "l.ini:2: line longer than 198 bytes"));
    config_errors_release(&e);
}
END_TEST

/* A model id with a control byte is refused: libinih trims a trailing one from a line, so the
 * dump of such a config loaded back another id (found by fuzz_config's round trip). */
START_TEST(test_model_control_byte)
{
    struct config_errors e = {0};
    const char *bad = "[backend.b]\nurl = http://127.0.0.1:1\nmodels = a, llama3.2\v, b\n";
    ck_assert_ptr_null(config_load_string("m.ini", bad, &e));
    ck_assert(has_msg(&e, "m.ini:3: "));
    ck_assert(has_msg(&e, "has a control byte"));
    config_errors_release(&e);
}
END_TEST

/* libinih cuts section names at 49 bytes: a longer [backend.NAME] is refused, not renamed. */
START_TEST(test_long_section_name)
{
    struct config_errors e = {0};
    const char *ok = "[backend.0123456789012345678901234567890123456789a]\n"
                     "url = http://127.0.0.1:1\nmodels = m\n";
    struct config *cfg = config_load_string("s.ini", ok, &e); /* 49 bytes: fits */
    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(cfg->backends[0].name, "0123456789012345678901234567890123456789a");
    config_free(cfg);
    const char *bad = "[backend.0123456789012345678901234567890123456789ab]\n"
                      "url = http://127.0.0.1:1\nmodels = m\n";
    ck_assert_ptr_null(config_load_string("s.ini", bad, &e));
    ck_assert(has_msg(&e, "s.ini:1: section name longer than 49 bytes"));
    config_errors_release(&e);
}
END_TEST

/* libinih took an indented line after a key for a continuation that replaces the key's value,
 * and skipped blanks (\v, \f, \r) and a BOM the reader's checks did not: indentation is now
 * ignored, and the section checks see what libinih sees. */
START_TEST(test_indented_lines)
{
    struct config_errors e = {0};
    const char *text = "[server]\n"
                       "    listen = 127.0.0.1:9091\n"
                       "\tthreads = 3\n"
                       "[backend.a]\n"
                       "url = http://h:1\n"
                       "models = m1, m2\n"
                       "    max_concurrency = 8   ; the engine's slots\n";
    struct config *c = config_load_string("i.ini", text, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->listen_port, 9091);
    ck_assert_uint_eq(c->threads, 3);
    ck_assert_uint_eq(c->backends[0].models.n, 2);
    ck_assert_str_eq(c->backends[0].models.v[1], "m2");
    ck_assert_uint_eq(c->backends[0].max_concurrency, 8);
    config_free(c);

    /* a continuation that is not a key = value line is a syntax error, not a new value */
    ck_assert_ptr_null(
        config_load_string("i.ini", "[backend.a]\nurl = http://h:1\nmodels = m1,\n    m2\n", &e));
    ck_assert(has_msg(&e, "i.ini:4: syntax error"));
    config_errors_release(&e);

    /* an empty [keys] behind a vertical tab still turns auth on (and is refused) */
    ck_assert_ptr_null(
        config_load_string("i.ini", "\v[keys]\n[backend.a]\nurl = http://h:1\nmodels = m\n", &e));
    ck_assert(has_msg(&e, "[keys] is present but empty"));
    config_errors_release(&e);

    /* a long section name behind a form feed or a BOM is refused, not cut */
    const char *tail =
        "0123456789012345678901234567890123456789ab]\nurl = http://h:1\nmodels = m\n";
    char buf[256];
    snprintf(buf, sizeof(buf), "\f[backend.%s", tail);
    ck_assert_ptr_null(config_load_string("i.ini", buf, &e));
    ck_assert(has_msg(&e, "i.ini:1: section name longer than 49 bytes"));
    config_errors_release(&e);
    snprintf(buf, sizeof(buf), "\xEF\xBB\xBF[backend.%s", tail);
    ck_assert_ptr_null(config_load_string("i.ini", buf, &e));
    ck_assert(has_msg(&e, "i.ini:1: section name longer than 49 bytes"));
    config_errors_release(&e);
}
END_TEST

/* --dump-config's output loads again: a dumped line is never longer than the one it came from,
 * even for a line at the length limit written without blanks ("models=a,b,..."). */
START_TEST(test_dump_loads_again)
{
    char text[1024], models[200], host[200];
    size_t n = 0;
    for (int i = 0; n + 4 <= 190; i++)
        n += (size_t)snprintf(models + n, sizeof(models) - n, "%sm%02d", i ? "," : "", i);
    while (n < 190)
        models[n++] = 'x'; /* "models=" + 190 bytes: the longest line the reader keeps */
    models[n] = '\0';
    memset(host, 'h', 188);
    host[188] = '\0';
    snprintf(text, sizeof(text), "[server]\nlisten=%s:1\n[backend.a]\nurl=http://h:1\nmodels=%s\n",
             host, models);
    struct config_errors e = {0};
    struct config *c = config_load_string("d.ini", text, &e);
    ck_assert_ptr_nonnull(c);
    char *dump = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&dump, &len);
    ck_assert_ptr_nonnull(f);
    config_dump(c, f);
    fclose(f);
    struct config *again = config_load_string("dump.ini", dump, &e);
    for (size_t i = 0; i < e.n; i++)
        fprintf(stderr, "%s\n", e.msgs[i]);
    ck_assert_ptr_nonnull(again);
    ck_assert_str_eq(again->listen, c->listen);
    ck_assert_uint_eq(again->backends[0].models.n, c->backends[0].models.n);
    ck_assert_str_eq(again->backends[0].models.v[37], c->backends[0].models.v[37]);
    /* a line that fits keeps the blanks around '=' */
    ck_assert_ptr_nonnull(strstr(dump, "\nurl = http://h:1\n"));
    config_free(again);
    config_free(c);
    free(dump);
}
END_TEST

/* A value or a model may start with ';': with a blank before it, the dump turned it into a
 * comment (the models after it, or the whole listen value, were lost when loaded again). */
START_TEST(test_dump_semicolon)
{
    struct config_errors e = {0};
    struct config *c = config_load_string(
        "s.ini", "[server]\nlisten=;h:1\n[backend.a]\nurl = http://h:1\nmodels = a,;b, c\n", &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->listen, ";h:1");
    ck_assert_uint_eq(c->backends[0].models.n, 3);
    struct config *again = dump_and_load(c, &e);
    ck_assert_ptr_nonnull(again);
    ck_assert_str_eq(again->listen, ";h:1");
    ck_assert_uint_eq(again->backends[0].models.n, 3);
    ck_assert_str_eq(again->backends[0].models.v[1], ";b");
    ck_assert_str_eq(again->backends[0].models.v[2], "c");
    config_free(again);
    config_free(c);
}
END_TEST

/* "http://" lost its trailing slashes and loaded as the url "http:", which has no scheme. */
/* A request is routed among at most 8 backends of its model (JOB_MAX_CANDIDATES): a model
 * on more is an error naming it and the count, not a 9th backend silently never used. 8 is
 * fine; a backend that lists a model twice counts once; a model on 8 beside one on 9 is not
 * named. */
START_TEST(test_model_backends_max)
{
    char text[4096];
    struct config_errors e = {0};
    for (int n = 8; n <= 10; n++) {
        size_t at = 0;
        for (int i = 0; i < n; i++)
            at += (size_t)snprintf(text + at, sizeof(text) - at,
                                   "[backend.b%d]\nurl = http://h:%d\nmodels = big, big%s\n", i,
                                   1000 + i, i < 8 ? ", eight" : "");
        struct config *c = config_load_string("many.ini", text, &e);
        if (n == 8) {
            ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
            const struct cfg_backend *out[16];
            ck_assert_uint_eq(config_backends_for(c, "big", out, 16), 8);
            config_free(c);
            continue;
        }
        ck_assert_ptr_null(c);
        char want[160];
        snprintf(want, sizeof(want),
                 "many.ini:25: [backend.b8]: model 'big' is on %d backends, at most 8", n);
        ck_assert_msg(has_msg(&e, want), "%s", e.n ? e.msgs[0] : "no message");
        ck_assert(!has_msg(&e, "'eight'"));
        ck_assert_uint_eq(e.n, 1);
        config_errors_release(&e);
    }
}
END_TEST

START_TEST(test_url_needs_host)
{
    static const char *const urls[] = {"http://", "https:///", "http:///v1", "https://"};
    struct config_errors e = {0};
    char text[128];
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        snprintf(text, sizeof(text), "[backend.a]\nurl = %s\nmodels = m\n", urls[i]);
        ck_assert_ptr_null(config_load_string("u.ini", text, &e));
        ck_assert(has_msg(&e, "u.ini:2: url"));
        ck_assert(has_msg(&e, "has no host"));
        config_errors_release(&e);
    }
}
END_TEST

/* "http://h /" loaded as "http://h " (curl refuses it; the dump lost the blank): no blanks or
 * control bytes in a url. */
START_TEST(test_url_no_blanks)
{
    struct config_errors e = {0};
    char text[128];
    static const char *const blanks[] = {"http://h /", "http://h x", "http://h\vx", "http://\x7fh"};
    for (size_t i = 0; i < sizeof(blanks) / sizeof(blanks[0]); i++) {
        snprintf(text, sizeof(text), "[backend.a]\nurl = %s\nmodels = m\n", blanks[i]);
        ck_assert_ptr_null(config_load_string("u.ini", text, &e));
        ck_assert(has_msg(&e, "has a blank or a control byte"));
        config_errors_release(&e);
    }
}
END_TEST

START_TEST(test_url_trailing_slashes)
{
    struct config_errors e = {0};
    struct config *c =
        config_load_string("u.ini", "[backend.a]\nurl = https://h//\nmodels = m\n", &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->backends[0].url, "https://h");
    config_free(c);
}
END_TEST

/* The keys' index: 5,000 keys, each found as itself; near misses (one byte changed, a prefix,
 * one byte more, empty) found as nothing; keys known only by their SHA-256 among them; values
 * shared between two keys refused in every combination. */
START_TEST(test_key_index)
{
    enum { N = 5000 };
    size_t cap = 256 + (size_t)N * 64;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    size_t at = (size_t)snprintf(text, cap, "[keys]\n");
    for (int i = 0; i < N; i++)
        at += (size_t)snprintf(text + at, cap - at, "u%d = sk-%08d-abcdefghij\n", i, i);
    /* sha256("hello"), sha256("world") */
    at += (size_t)snprintf(
        text + at, cap - at,
        "[key.h]\nkey_sha256 = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
        "[key.w]\nkey_sha256 = 486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7\n"
        "[backend.a]\nurl = http://127.0.0.1:1\nmodels = m\n");
    struct config_errors e = {0};
    struct config *c = config_load_string("i.ini", text, &e);
    ck_assert_msg(c != NULL, "%s", e.n ? e.msgs[0] : "");
    ck_assert_uint_eq(c->n_keys, N + 2);
    char v[64], name[16];
    for (int i = 0; i < N; i++) {
        int n = snprintf(v, sizeof(v), "sk-%08d-abcdefghij", i);
        snprintf(name, sizeof(name), "u%d", i);
        const struct cfg_key *k = config_key_find(c, v, (size_t)n);
        ck_assert_msg(k && !strcmp(k->name, name), "key %d", i);
        v[3] ^= 1; /* one byte changed */
        ck_assert_ptr_null(config_key_find(c, v, (size_t)n));
        v[3] ^= 1;
        ck_assert_ptr_null(config_key_find(c, v, (size_t)n - 1)); /* a prefix */
        v[n] = 'k';
        ck_assert_ptr_null(config_key_find(c, v, (size_t)n + 1)); /* one byte more */
    }
    ck_assert_ptr_null(config_key_find(c, "", 0));
    ck_assert_str_eq(config_key_find(c, "hello", 5)->name, "h");
    ck_assert_str_eq(config_key_find(c, "world", 5)->name, "w");
    ck_assert_ptr_null(config_key_find(c, "hellp", 5));
    config_free(c);
    free(text);

    static const char *const dup[] = {
        /* two plain values */
        "[keys]\na = sk-1\nb = sk-2\nc = sk-1\n",
        /* two digests */
        "[key.a]\nkey_sha256 = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
        "[key.c]\nkey_sha256 = 2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824\n",
        /* a plain value and its own digest */
        "[keys]\na = hello\n"
        "[key.c]\nkey_sha256 = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n",
    };
    for (size_t i = 0; i < sizeof(dup) / sizeof(dup[0]); i++) {
        char t[512];
        snprintf(t, sizeof(t), "%s[backend.a]\nurl = http://127.0.0.1:1\nmodels = m\n", dup[i]);
        struct config_errors d = {0};
        ck_assert_ptr_null(config_load_string("d.ini", t, &d));
        ck_assert_msg(has_msg(&d, "keys 'a' and 'c' have the same value"), "case %zu: %s", i,
                      d.n ? d.msgs[0] : "");
        config_errors_release(&d);
    }
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_good);
    tcase_add_test(tc, test_errors_have_lines);
    tcase_add_test(tc, test_syntax_and_empty);
    tcase_add_test(tc, test_key_sections);
    tcase_add_test(tc, test_key_index);
    tcase_add_test(tc, test_env_override);
    tcase_add_test(tc, test_long_line);
    tcase_add_test(tc, test_line_limit);
    tcase_add_test(tc, test_long_section_name);
    tcase_add_test(tc, test_model_control_byte);
    tcase_add_test(tc, test_indented_lines);
    tcase_add_test(tc, test_dump_loads_again);
    tcase_add_test(tc, test_dump_semicolon);
    tcase_add_test(tc, test_url_needs_host);
    tcase_add_test(tc, test_model_backends_max);
    tcase_add_test(tc, test_url_no_blanks);
    tcase_add_test(tc, test_url_trailing_slashes);
    tcase_add_test(tc, test_per_ip_auto);
    suite_add_tcase(s, tc);
    return s;
}
