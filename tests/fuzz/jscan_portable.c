/* jscan compiled a second time with the portable (SWAR) string scan and every exported name
 * suffixed _portable, so fuzz_jscan can check that both builds give the same answers. */
#define JSCAN_PORTABLE 1
#define jscan_parse jscan_parse_portable
#define jscan_strerror jscan_strerror_portable
#define jscan_top jscan_top_portable
#define jscan_member jscan_member_portable
#define jscan_iter_init jscan_iter_init_portable
#define jscan_iter_next jscan_iter_next_portable
#define jscan_string jscan_string_portable
#define jscan_string_eq jscan_string_eq_portable
#define jscan_int jscan_int_portable
#include "core/jscan.c"
