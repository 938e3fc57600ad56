#!/usr/bin/env python3
"""Writes tests/jscan/corpus/: the hand-written cases of the differential test.

    python3 tests/jscan/make_corpus.py     (rewrites the directory; the files are committed)

File names: y_<category>_<what> must be accepted (status ok), n_<category>_<what> rejected,
by jscan and by the reference alike (diff.py checks both). Categories follow the public JSON
conformance suites (JSONTestSuite): number, string, escape, utf8, literal, structure,
whitespace, depth, trailing, plus the gateway's own rules: notobj, dup, nulkey, toomany,
precedence, and realistic request bodies (req) for the extracted fields.

Value cases are wrapped as {"v":VALUE} (the gateway only takes objects); each valid value is
also written bare as n_notobj_..., valid JSON that is not an object.
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# (name, JSON text of a value) -- valid values
VALID = [
    # numbers
    ("number_zero", b"0"), ("number_minus_zero", b"-0"), ("number_one", b"1"),
    ("number_minus_one", b"-1"), ("number_int", b"123"), ("number_frac", b"1.5"),
    ("number_minus_frac", b"-1.5"), ("number_zero_frac", b"0.0"), ("number_exp", b"1e5"),
    ("number_exp_upper", b"1E5"), ("number_exp_plus", b"1e+5"), ("number_exp_minus", b"1e-5"),
    ("number_exp_upper_minus", b"1E-5"), ("number_zero_exp", b"0e0"),
    ("number_minus_zero_frac_exp", b"-0.0e-0"), ("number_big_exp", b"1.5e300"),
    ("number_huge_exp", b"1e400"), ("number_tiny_exp", b"1e-400"),
    ("number_huge_neg_exp", b"-1e99999"), ("number_exp_leading_zeros", b"1.5E-0003"),
    ("number_bigint", b"123456789012345678901234567890"),
    ("number_int64_min", b"-9223372036854775808"), ("number_int64_max", b"9223372036854775807"),
    ("number_int64_max_plus1", b"9223372036854775808"),
    ("number_int64_min_minus1", b"-9223372036854775809"),
    ("number_long_frac", b"0.1234567890123456789012345678901234567890"),
    ("number_one_zero", b"1.0"), ("number_ten", b"10"), ("number_exp_frac", b"2.5E+007"),
    ("number_5000_digits", b"7" * 5000),
    # strings and escapes
    ("string_empty", b'""'), ("string_a", b'"a"'), ("string_space", b'" "'),
    ("string_ascii_printable", b'"' + bytes(c for c in range(0x20, 0x7f)
                                            if c not in (0x22, 0x5c)) + b'"'),
    ("string_long", b'"' + b"abcdefghij" * 500 + b'"'),
    ("escape_quote", b'"\\""'), ("escape_backslash", b'"\\\\"'), ("escape_slash", b'"\\/"'),
    ("escape_all_short", b'"\\b\\f\\n\\r\\t\\"\\\\\\/"'), ("escape_u_ascii", b'"\\u0041"'),
    ("escape_u_latin", b'"\\u00e9"'), ("escape_u_upper_hex", b'"\\u00E9"'),
    ("escape_u_mixed_case", b'"\\uAbCd"'), ("escape_u_euro", b'"\\u20ac"'),
    ("escape_u_nul_in_value", b'"\\u0000"'), ("escape_u_ffff", b'"\\uffff"'),
    ("escape_u_fffe", b'"\\ufffe"'), ("escape_pair", b'"\\ud83d\\ude00"'),
    ("escape_pair_upper", b'"\\uD83D\\uDE00"'), ("escape_pair_max", b'"\\udbff\\udfff"'),
    ("escape_lone_high", b'"\\ud800"'), ("escape_lone_low", b'"\\udc00"'),
    ("escape_reversed_pair", b'"\\udc00\\ud800"'), ("escape_two_high", b'"\\ud800\\ud800"'),
    ("escape_high_then_char", b'"\\ud800x"'), ("escape_high_then_escape", b'"\\ud800\\u0041"'),
    ("escape_high_then_newline", b'"\\ud800\\n"'), ("escape_many", b'"' + b"\\n" * 200 + b'"'),
    ("escape_backslash_u_literal", b'"\\\\u0000"'), ("escape_at_end", b'"abc\\n"'),
    ("string_slash_raw", b'"a/b"'), ("string_del_raw", b'"\x7f"'),
    ("string_single_quote", b'"\'"'), ("string_comment_like", b'"/* not a comment */"'),
    ("string_brackets", b'"{[,:]}"'),
    # UTF-8: boundaries of every length
    ("utf8_u0080", b'"\xc2\x80"'), ("utf8_u07ff", b'"\xdf\xbf"'), ("utf8_u0800", b'"\xe0\xa0\x80"'),
    ("utf8_ud7ff", b'"\xed\x9f\xbf"'), ("utf8_ue000", b'"\xee\x80\x80"'),
    ("utf8_uffff", b'"\xef\xbf\xbf"'), ("utf8_ufeff_inside", b'"\xef\xbb\xbf"'),
    ("utf8_u10000", b'"\xf0\x90\x80\x80"'), ("utf8_u10ffff", b'"\xf4\x8f\xbf\xbf"'),
    ("utf8_u1ffff", b'"\xf0\x9f\xbf\xbf"'), ("utf8_e_acute", b'"\xc3\xa9"'),
    ("utf8_euro", b'"\xe2\x82\xac"'), ("utf8_emoji", b'"\xf0\x9f\x98\x80"'),
    ("utf8_line_separator", b'"\xe2\x80\xa8\xe2\x80\xa9"'),
    ("utf8_chinese", "\"中文文本，包含标点。\"".encode()),
    ("utf8_cyrillic", "\"Привет, мир! Как дела?\"".encode()),
    ("utf8_mixed_long", ("\"" + "aé€😀" * 300 + "\"").encode()),
    ("utf8_after_ascii_run", ("\"" + "x" * 40 + "ж" + "y" * 17 + "\"").encode()),
    # literals
    ("literal_true", b"true"), ("literal_false", b"false"), ("literal_null", b"null"),
    # structures
    ("structure_empty_array", b"[]"), ("structure_array_one", b"[1]"),
    ("structure_array_mixed", b'[1,"a",true,false,null,[],{},-0.5e1]'),
    ("structure_nested_arrays", b"[[[]],[[]]]"), ("structure_empty_object", b"{}"),
    ("structure_object_in_object", b'{"a":{}}'), ("structure_array_in_object", b'{"a":[]}'),
    ("structure_object_in_array", b'[{"a":1}]'), ("structure_nested_dup", b'{"a":1,"a":2}'),
    ("structure_empty_key", b'{"":1}'), ("structure_spaces", b'[ 1 , 2 , { "a" : [ ] } ]'),
    ("structure_all_ws", b'[\t\n\r 1\t\n\r ,\r\n\t2 ]'),
]

# (name, JSON text) -- invalid values (checked wrapped: {"v":X}; and bare)
INVALID = [
    # numbers
    ("number_leading_zero", b"01"), ("number_minus_leading_zero", b"-01"),
    ("number_double_zero", b"00"), ("number_plus", b"+1"), ("number_dot_start", b".5"),
    ("number_dot_end", b"1."), ("number_minus_alone", b"-"), ("number_minus_letter", b"-a"),
    ("number_exp_alone", b"1e"), ("number_exp_plus_alone", b"1e+"), ("number_exp_minus_alone", b"1E-"),
    ("number_hex", b"0x1"), ("number_hex_upper", b"0X1F"), ("number_nan", b"NaN"),
    ("number_infinity", b"Infinity"), ("number_minus_infinity", b"-Infinity"),
    ("number_inf", b"inf"), ("number_dot_exp", b"1.e5"), ("number_frac_exp_frac", b"1e5.5"),
    ("number_two_dots", b"1.5.5"), ("number_double_minus", b"--1"), ("number_underscore", b"1_000"),
    ("number_binary", b"0b1"), ("number_arabic_digit", "\u0661".encode()),
    ("number_fullwidth_digit", "\uff12".encode()), ("number_minus_space", b"- 1"),
    ("number_space_exp", b"1 e5"), ("number_zero_dot_exp", b"0.e1"), ("number_minus_dot", b"-.5"),
    ("number_012", b"012"), ("number_double_exp", b"1e5e5"), ("number_dot", b"."),
    ("number_exp_dot", b"1e.5"), ("number_minus_nan", b"-NaN"), ("number_plus_inf", b"+Infinity"),
    ("number_comma_decimal", b"1,5"), ("number_trailing_minus", b"1-"),
    # strings and escapes
    ("escape_x", b'"\\x41"'), ("escape_upper_u", b'"\\U0041"'), ("escape_u_3_digits", b'"\\u004"'),
    ("escape_u_bad_digit", b'"\\u00G1"'), ("escape_u_alone", b'"\\u"'), ("escape_apostrophe", b"\"\\'\""),
    ("escape_a", b'"\\a"'), ("escape_zero", b'"\\0"'), ("escape_space", b'"\\ "'),
    ("escape_high_then_bad_u", b'"\\ud800\\u"'), ("escape_high_then_bad_u2", b'"\\ud800\\uZZZZ"'),
    ("escape_backslash_at_end", b'"abc\\"'), ("escape_e_acute_raw", b'"\\\xc3\xa9"'),
    ("escape_u_plus", b'"\\u+123"'), ("escape_u_space", b'"\\u 123"'),
    ("string_unterminated", b'"abc'), ("string_raw_tab", b'"a\tb"'), ("string_raw_newline", b'"a\nb"'),
    ("string_raw_cr", b'"a\rb"'), ("string_raw_nul", b'"a\x00b"'), ("string_raw_1f", b'"\x1f"'),
    ("string_raw_01", b'"\x01"'), ("string_single_quotes", b"'a'"), ("string_no_quotes", b"abc"),
    ("string_raw_nul_long", b'"' + b"x" * 40 + b"\x00" + b"y" * 40 + b'"'),
    ("string_raw_ctrl_after_32", b'"' + b"x" * 33 + b"\x02" + b'"'),
    # UTF-8
    ("utf8_overlong_c0", b'"\xc0\xaf"'), ("utf8_overlong_c1", b'"\xc1\xbf"'),
    ("utf8_overlong_e0", b'"\xe0\x80\xaf"'), ("utf8_overlong_e0_9f", b'"\xe0\x9f\xbf"'),
    ("utf8_overlong_f0", b'"\xf0\x80\x80\xaf"'), ("utf8_overlong_f0_8f", b'"\xf0\x8f\xbf\xbf"'),
    ("utf8_surrogate_d800", b'"\xed\xa0\x80"'), ("utf8_surrogate_dfff", b'"\xed\xbf\xbf"'),
    ("utf8_surrogate_dc00", b'"\xed\xb0\x80"'),
    ("utf8_surrogate_pair", b'"\xed\xa0\xbd\xed\xb8\x80"'),
    ("utf8_above_10ffff", b'"\xf4\x90\x80\x80"'), ("utf8_f5", b'"\xf5\x80\x80\x80"'),
    ("utf8_f7", b'"\xf7\xbf\xbf\xbf"'), ("utf8_5byte", b'"\xf8\x88\x80\x80\x80"'),
    ("utf8_6byte", b'"\xfc\x84\x80\x80\x80\x80"'), ("utf8_fe", b'"\xfe"'), ("utf8_ff", b'"\xff"'),
    ("utf8_lone_continuation_80", b'"\x80"'), ("utf8_lone_continuation_bf", b'"\xbf"'),
    ("utf8_truncated_2", b'"\xc2"'), ("utf8_truncated_3", b'"\xe2\x82"'),
    ("utf8_truncated_4", b'"\xf0\x9f\x98"'), ("utf8_bad_cont_2", b'"\xc2\x41"'),
    ("utf8_bad_cont_3a", b'"\xe2\x28\xa1"'), ("utf8_bad_cont_3b", b'"\xe2\x82\x28"'),
    ("utf8_bad_cont_4a", b'"\xf0\x28\x8c\xbc"'), ("utf8_bad_cont_4b", b'"\xf0\x90\x28\xbc"'),
    ("utf8_bad_cont_4c", b'"\xf0\x90\x8c\x28"'), ("utf8_truncated_mid", b'"\xce\xba\xe1\xbd"'),
    ("utf8_two_continuations", b'"\xc3\xa9\xa9"'), ("utf8_latin1", b'"caf\xe9"'),
    ("utf8_bad_after_ascii_run", b'"' + b"x" * 37 + b"\xc3\x28" + b'"'),
    ("utf8_bad_at_block_end", b'"' + b"x" * 31 + b"\xe2\x82" + b'"'),
    ("utf8_raw_outside_string", b"\xc3\xa9"), ("utf8_nbsp_as_value", b"\xc2\xa0"),
    # literals
    ("literal_tru", b"tru"), ("literal_fals", b"fals"), ("literal_nul", b"nul"),
    ("literal_capital_true", b"True"), ("literal_upper_false", b"FALSE"), ("literal_null_upper", b"NULL"),
    ("literal_truefalse", b"truefalse"), ("literal_t", b"t"), ("literal_undefined", b"undefined"),
    ("literal_nan_lower", b"nan"), ("literal_nulll", b"nulll"), ("literal_true1", b"true1"),
    # structures
    ("structure_array_trailing_comma", b"[1,]"), ("structure_array_leading_comma", b"[,1]"),
    ("structure_array_no_comma", b"[1 2]"), ("structure_array_double_comma", b"[1,,2]"),
    ("structure_array_unclosed", b"[1"), ("structure_array_unclosed_comma", b"[1,"),
    ("structure_array_close_brace", b"[1}"), ("structure_array_only_comma", b"[,]"),
    ("structure_object_no_colon", b'{"a"}'), ("structure_object_no_value", b'{"a":}'),
    ("structure_object_missing_colon", b'{"a" 1}'), ("structure_object_bare_key", b"{a:1}"),
    ("structure_object_single_quoted_key", b"{'a':1}"), ("structure_object_trailing_comma", b'{"a":1,}'),
    ("structure_object_only_comma", b"{,}"), ("structure_object_no_comma", b'{"a":1 "b":2}'),
    ("structure_object_number_key", b"{1:2}"), ("structure_object_null_key", b"{null:1}"),
    ("structure_object_double_colon", b'{"a"::1}'), ("structure_object_close_bracket", b'{"a":1]'),
    ("structure_object_unclosed", b'{"a":1'), ("structure_object_open", b"{"),
    ("structure_object_key_only_open", b'{"a'), ("structure_object_comma_instead_colon", b'{"a",1}'),
    ("structure_object_array_key", b'{[]:1}'), ("structure_close_only", b"]"),
    ("structure_brace_close_only", b"}"), ("structure_comment_block", b"[1/* c */]"),
    ("structure_comment_line", b"[1// c\n]"), ("structure_extra_close", b"[1]]"),
    ("structure_colon_in_array", b"[1:2]"), ("structure_angle", b"<1>"),
    ("structure_semicolon", b"[1;2]"), ("structure_empty_value", b""),
]

RAW_Y = [  # whole documents that must be accepted
    ("structure_top_empty_object", b"{}"),
    ("whitespace_around", b" \t\r\n{} \t\r\n"),
    ("whitespace_inside", b'{ \t\r\n"a" \t\r\n: \t\r\n1 \t\r\n, "b":2 }'),
    ("whitespace_lf_end", b'{"a":1}\n'),
    ("whitespace_crlf_end", b'{"a":1}\r\n'),
    ("depth_64_arrays", b'{"a":' + b"[" * 63 + b"]" * 63 + b"}"),
    ("depth_64_objects", b'{"a":' * 64 + b"1" + b"}" * 64),
    ("depth_64_mixed", b'{"a":' + b'[{"b":' * 31 + b"[1]" + b"}]" * 31 + b"}"),
    ("dup_nested_allowed", b'{"x":{"a":1,"a":2},"y":[{"b":1,"b":2}]}'),
    ("dup_case_differs", b'{"a":1,"A":2}'),
    ("dup_prefix_key", b'{"ab":1,"a":2,"b":3}'),
    ("dup_lone_high_vs_low", b'{"\\ud800":1,"\\udc00":2}'),
    ("dup_pair_vs_lone_high", b'{"\\ud83d\\ude00":1,"\\ud83d":2}'),
    ("dup_combining_vs_precomposed", b'{"\\u00e9":1,"e\\u0301":2}'),
    ("dup_escaped_backslash_u", b'{"\\\\u0061":1,"a":2}'),
    ("dup_distinct_escapes", b'{"\\n":1,"\\r":2,"\\t":3,"\\b":4,"\\f":5,"\\/":6,"\\\\":7,"\\"":8}'),
    ("dup_same_hash_prefix", b'{"k":1,"k\\u0000x":2}'.replace(b"\\u0000", b"\\u0001")),
    ("nulkey_in_value_allowed", b'{"a":"\\u0000","b":["\\u0000"]}'),
    ("nulkey_escaped_backslash", b'{"\\\\u0000":1}'),
    ("toomany_128", b"{" + b",".join(b'"k%d":%d' % (k, k) for k in range(128)) + b"}"),
    ("req_chat_minimal", b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'),
    ("req_chat_stream", b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'),
    ("req_chat_full",
     b'{\n  "model": "gpt-4o",\n  "messages": [\n    {"role": "system", "content": "You are '
     b'helpful.\\nBe brief."},\n    {"role": "user", "content": "Quote: \\"hi\\" \xe2\x80\x94 '
     b'caf\xc3\xa9 \\u2603 \xf0\x9f\x98\x80"}\n  ],\n  "stream": true,\n  "stream_options": '
     b'{"include_usage": true},\n  "max_tokens": 256,\n  "max_completion_tokens": 512,\n  '
     b'"temperature": 0.7,\n  "user": "user-\xc3\xbc-42"\n}\n'),
    ("req_model_escaped_key", b'{"m\\u006fdel":"m","messages":[1]}'),
    ("req_model_escaped_value", b'{"model":"gpt\\u002d4\\/x","messages":[1]}'),
    ("req_model_nul_value", b'{"model":"a\\u0000b","messages":[1]}'),
    ("req_model_lone_surrogate", b'{"model":"m\\ud800","messages":[1]}'),
    ("req_model_pair", b'{"model":"m\\ud83d\\ude00","messages":[1]}'),
    ("req_model_number", b'{"model":5,"messages":[1]}'),
    ("req_model_empty", b'{"model":"","messages":[1]}'),
    ("req_stream_false", b'{"model":"m","stream":false}'),
    ("req_stream_null", b'{"model":"m","stream":null}'),
    ("req_stream_string", b'{"model":"m","stream":"true"}'),
    ("req_stream_number", b'{"model":"m","stream":1}'),
    ("req_stream_options_dup_last_wins",
     b'{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}'),
    ("req_stream_options_array", b'{"model":"m","stream_options":[]}'),
    ("req_stream_options_empty", b'{"model":"m","stream_options":{}}'),
    ("req_stream_options_nested",
     b'{"model":"m","stream_options":{"x":{"include_usage":1},"include_usage":null}}'),
    ("req_max_tokens_int", b'{"max_tokens":100,"max_completion_tokens":0}'),
    ("req_max_tokens_negative", b'{"max_tokens":-1}'),
    ("req_max_tokens_float", b'{"max_tokens":1.0,"max_completion_tokens":1e2}'),
    ("req_max_tokens_int64_max", b'{"max_tokens":9223372036854775807}'),
    ("req_max_tokens_overflow", b'{"max_tokens":9223372036854775808}'),
    ("req_max_tokens_int64_min", b'{"max_tokens":-9223372036854775808}'),
    ("req_max_tokens_underflow", b'{"max_tokens":-9223372036854775809}'),
    ("req_max_tokens_string", b'{"max_tokens":"100"}'),
    ("req_max_tokens_minus_zero", b'{"max_tokens":-0}'),
    ("req_max_tokens_huge", b'{"max_tokens":' + b"9" * 400 + b"}"),
    ("req_user_unicode", b'{"user":"\xc3\xbc\\u00fc"}'),
    ("req_messages_empty", b'{"model":"m","messages":[]}'),
    ("req_messages_scalars", b'{"model":"m","messages":[1,"a",null,[]]}'),
    ("req_messages_role_dup", b'{"messages":[{"role":"a","role":"b"},{"content":"x"},{"role":5}]}'),
    ("req_messages_string", b'{"messages":"hello"}'),
    ("req_messages_object", b'{"messages":{"a":1,"a":2}}'),
    ("req_prompt_string", b'{"model":"m","prompt":"Once upon a time"}'),
    ("req_prompt_array", b'{"model":"m","prompt":["a","b",["c"]]}'),
    ("req_input_string", b'{"model":"e","input":"embed me"}'),
    ("req_input_nested", b'{"model":"e","input":[[1,2,3],[4]]}'),
    ("req_tools_deep",
     b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function",'
     b'"function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":'
     b'"array","items":{"type":"string"}}}}}}]}'),
    ("req_content_parts",
     b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},'
     b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}'),
]

RAW_N = [  # whole documents that must be rejected
    ("structure_empty_file", b""), ("whitespace_only_space", b" "), ("whitespace_only_mixed", b" \t\r\n"),
    ("structure_bom_object", b"\xef\xbb\xbf{}"), ("structure_bom_only", b"\xef\xbb\xbf"),
    ("trailing_garbage", b"{}x"), ("trailing_second_object", b"{}{}"), ("trailing_array", b"{} []"),
    ("trailing_nul", b"{}\x00"), ("trailing_formfeed", b"{}\x0c"), ("trailing_comma", b"{},"),
    ("trailing_close", b"{}}"), ("trailing_vt", b"{}\x0b"), ("trailing_nbsp", b"{}\xc2\xa0"),
    ("trailing_bom", b"{}\xef\xbb\xbf"), ("trailing_comment", b"{} // c"),
    ("trailing_after_number", b"1 2"), ("trailing_after_newline", b'{"a":1}\nx'),
    ("trailing_invalid_utf8", b"{}\xff"),
    ("whitespace_formfeed_before", b"\x0c{}"), ("whitespace_vt_before", b"\x0b{}"),
    ("whitespace_nbsp_before", b"\xc2\xa0{}"), ("whitespace_u2028_inside", b'{"a":\xe2\x80\xa81}'),
    ("whitespace_formfeed_inside", b'{"a":\x0c1}'), ("whitespace_nul_inside", b'{"a":\x001}'),
    ("structure_unclosed_deep", b"[" * 100000),
    ("depth_65_arrays", b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"),
    ("depth_65_objects", b'{"a":' * 65 + b"1" + b"}" * 65),
    ("depth_65_bare_arrays", b"[" * 65 + b"]" * 65),
    ("depth_500_arrays", b"[" * 500 + b"]" * 500),
    ("depth_65_then_syntax_error", b'{"a":' + b"[" * 64 + b"x"),
    ("notobj_64_bare_arrays", b"[" * 64 + b"]" * 64),
    ("dup_simple", b'{"a":1,"a":2}'), ("dup_escaped_model", b'{"model":"a","m\\u006fdel":"b"}'),
    ("dup_escaped_first", b'{"\\u0061":1,"a":2}'), ("dup_latin", b'{"\xc3\xa9":1,"\\u00e9":2}'),
    ("dup_emoji_pair", b'{"\xf0\x9f\x98\x80":1,"\\ud83d\\ude00":2}'),
    ("dup_lone_surrogate", b'{"\\ud800":1,"\\ud800":2}'), ("dup_slash", b'{"a\\/b":1,"a/b":2}'),
    ("dup_quote", b'{"\\"":1,"\\u0022":2}'), ("dup_third", b'{"a":1,"b":2,"a":3}'),
    ("dup_empty", b'{"":1,"":2}'), ("dup_whitespace", b'{"a" :1, "a":2}'),
    ("dup_upper_hex", b'{"\\u00E9":1,"\\u00e9":2}'), ("dup_long", b'{"' + b"k" * 300 + b'":1,"'
                                                      + b"k" * 299 + b'\\u006b":2}'),
    ("dup_stream", b'{"model":"m","stream":false,"messages":[1],"stream":true}'),
    ("nulkey_top", b'{"\\u0000":1}'), ("nulkey_suffix", b'{"a\\u0000":1}'),
    ("nulkey_nested", b'{"x":{"\\u0000":1}}'), ("nulkey_in_array", b'{"x":[{"a\\u0000b":1}]}'),
    ("nulkey_model_truncation", b'{"model\\u0000x":"evil","model":"good"}'),
    ("toomany_129", b"{" + b",".join(b'"k%d":%d' % (k, k) for k in range(129)) + b"}"),
    ("toomany_200", b"{" + b",".join(b'"k%d":%d' % (k, k) for k in range(200)) + b"}"),
    ("precedence_dup_then_syntax", b'{"a":1,"a":2,'),
    ("precedence_dup_then_bad_utf8", b'{"a":1,"a":"\xff"}'),
    ("precedence_dup_then_depth", b'{"a":1,"a":2,"b":' + b"[" * 64 + b"]" * 64 + b"}"),
    ("precedence_notobj_nulkey", b'[{"\\u0000":1}]'),
    ("precedence_nulkey_dup", b'{"\\u0000":1,"\\u0000":2}'),
    ("precedence_toomany_dup", b'{"k0":0,' + b",".join(b'"k%d":%d' % (k, k) for k in range(129)) + b"}"),
    ("precedence_nulkey_after_dup", b'{"a":1,"a":2,"b":{"\\u0000":1}}'),
    ("precedence_toomany_nulkey",
     b"{" + b",".join(b'"k%d":%d' % (k, k) for k in range(129)) + b',"\\u0000":1}'),
    ("precedence_trailing_after_dup", b'{"a":1,"a":2} x'),
]


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    names = set()

    def write(name, data):
        assert name not in names, name
        names.add(name)
        with open(os.path.join(OUT, name + ".json"), "wb") as f:
            f.write(data)

    for name, v in VALID:
        write("y_" + name, b'{"v":' + v + b"}")
        if not v.startswith(b"{"):
            write("n_notobj_" + name, v)
    for name, v in INVALID:
        write("n_" + name, b'{"v":' + v + b"}")
        if v:
            write("n_bare_" + name, v)
    for name, d in RAW_Y:
        write("y_" + name, d)
    for name, d in RAW_N:
        write("n_" + name, d)
    print("%d files in %s" % (len(names), os.path.relpath(OUT)))


if __name__ == "__main__":
    main()
