/* test_status.c: status strings, version, fp16 conversion and tensor helpers (no device needed). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

START_TEST(status_strings_cover_every_code) {
  const dua_status codes[] = {DUA_SUCCESS,
                              DUA_ERROR_INVALID_ARGUMENT,
                              DUA_ERROR_UNSUPPORTED,
                              DUA_ERROR_OUT_OF_MEMORY,
                              DUA_ERROR_NO_PLATFORM,
                              DUA_ERROR_NO_DEVICE,
                              DUA_ERROR_BUILD_FAILED,
                              DUA_ERROR_IO,
                              DUA_ERROR_CORRUPT_FILE,
                              DUA_ERROR_INTERNAL};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    const char *s = dua_status_string(codes[i]);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(strlen(s) > 3, "status %d has no text", (int)codes[i]);
    ck_assert_msg(strstr(s, "unknown") == NULL, "status %d is unknown", (int)codes[i]);
    for (size_t j = 0; j < i; j++)
      ck_assert_str_ne(s, dua_status_string(codes[j]));
  }
  ck_assert_str_eq(dua_status_string((dua_status)-5), "CL_OUT_OF_RESOURCES");
  ck_assert_str_eq(dua_status_string((dua_status)-11), "CL_BUILD_PROGRAM_FAILURE");
  ck_assert_str_eq(dua_status_string((dua_status)-54), "CL_INVALID_WORK_GROUP_SIZE");
  ck_assert_str_eq(dua_status_string((dua_status)-999), "unknown OpenCL error");
  ck_assert_str_eq(dua_status_string((dua_status)-4242), "unknown status");
}
END_TEST

START_TEST(version_matches_macros) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", DUA_VERSION_MAJOR, DUA_VERSION_MINOR, DUA_VERSION_PATCH);
  ck_assert_str_eq(dua_version(), want);
}
END_TEST

START_TEST(half_round_trips_every_value) {
  for (uint32_t h = 0; h < 65536; h++) {
    float f = dua_half_to_float((uint16_t)h);
    uint16_t back = dua_float_to_half(f);
    if (isnan(f))
      ck_assert_msg((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "NaN 0x%04x lost", h);
    else
      ck_assert_msg(back == h, "0x%04x -> %g -> 0x%04x", h, (double)f, back);
  }
}
END_TEST

START_TEST(half_rounds_to_nearest_even) {
  ck_assert_uint_eq(dua_float_to_half(1.0f), 0x3c00);
  ck_assert_uint_eq(dua_float_to_half(-2.0f), 0xc000);
  ck_assert_uint_eq(dua_float_to_half(65504.0f), 0x7bff);
  ck_assert_uint_eq(dua_float_to_half(65520.0f), 0x7c00);           /* rounds up to infinity */
  ck_assert_uint_eq(dua_float_to_half(1.0f + 1.0f / 2048), 0x3c00); /* tie, even stays */
  ck_assert_uint_eq(dua_float_to_half(1.0f + 3.0f / 2048), 0x3c02); /* tie, rounds to even */
  ck_assert_uint_eq(dua_float_to_half(5.9604645e-8f), 0x0001);      /* smallest subnormal */
  ck_assert_uint_eq(dua_float_to_half(2.0e-8f), 0x0000);
  ck_assert_uint_eq(dua_float_to_half(INFINITY), 0x7c00);
  test_rng r = test_rng_make(7);
  for (int i = 0; i < 100000; i++) { /* result within half an ulp of the input */
    float f = test_rng_float(&r) * 1000.0f;
    float g = dua_half_to_float(dua_float_to_half(f));
    ck_assert_msg(fabsf(f - g) <= fabsf(f) * (1.0f / 2048.0f) + 3e-8f, "%g -> %g", (double)f, (double)g);
  }
}
END_TEST

START_TEST(tensor_helpers) {
  ck_assert_uint_eq(dua_dtype_size(DUA_F32), 4);
  ck_assert_uint_eq(dua_dtype_size(DUA_F16), 2);
  ck_assert_uint_eq(dua_dtype_size((dua_dtype)7), 0);
  dua_tensor t = dua_tensor_contiguous(NULL, 64, DUA_F16, 2, 3, 5, 7);
  ck_assert_int_eq(t.strides[3], 1);
  ck_assert_int_eq(t.strides[2], 7);
  ck_assert_int_eq(t.strides[1], 35);
  ck_assert_int_eq(t.strides[0], 105);
  ck_assert_uint_eq(t.offset, 64);
}
END_TEST

START_TEST(null_safe_destroys) {
  dua_context_destroy(NULL);
  dua_buffer_destroy(NULL);
  dua_layout_destroy(NULL);
  ck_assert_int_eq(dua_context_options_init == NULL, 0);
  ck_assert_str_eq(dua_context_last_error(NULL), "no context");
  ck_assert_int_eq(dua_device_count(NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_create(NULL, NULL), DUA_ERROR_INVALID_ARGUMENT);
}
END_TEST

int main(void) {
  Suite *s = suite_create("status");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, status_strings_cover_every_code);
  tcase_add_test(tc, version_matches_macros);
  tcase_add_test(tc, half_round_trips_every_value);
  tcase_add_test(tc, half_rounds_to_nearest_even);
  tcase_add_test(tc, tensor_helpers);
  tcase_add_test(tc, null_safe_destroys);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
