/* test_ptx_sm90a.c: the PTX rewrites of host/runtime/ptx_sm90a.c (no device needed): for the wgmma kernels
 * every "// DUA_SM90A " marker uncommented, the target retargeted from sm_90 to sm_90a, a kernel's
 * "// DUA_MAXNREG n" turned into its entry's .maxnreg, "DUA_ENTRY_PARAM_<n>" anywhere in an entry turned into
 * the name of its entry's argument n (each entry its own), and anything that does not target sm_90 exactly
 * refused; for the mma.sync ones (dua_ptx_caps) the caps alone, on any target. */
#include "test_util.h"

#include "runtime/context_internal.h"

#include <stdlib.h>
#include <string.h>

START_TEST(markers_uncommented_and_target_retargeted) {
  const char *ptx = ".version 8.0\n.target sm_90, texmode_independent\n.address_size 64\n"
                    "\t// begin inline asm\n{\n// DUA_SM90A wgmma.fence.sync.aligned;\n"
                    "// DUA_SM90A wgmma.commit_group.sync.aligned;\n// a plain comment\n}\n";
  int markers = -1;
  char *out = dua_ptx_to_sm90a(ptx, &markers);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(markers, 2);
  ck_assert_str_eq(out, ".version 8.0\n.target sm_90a, texmode_independent\n.address_size 64\n"
                        "\t// begin inline asm\n{\nwgmma.fence.sync.aligned;\n"
                        "wgmma.commit_group.sync.aligned;\n// a plain comment\n}\n");
  free(out);
}
END_TEST

START_TEST(entry_parameter_names) {
  /* a long entry name: the output grows by more than the markers and the "a" take away */
  const char *ptx =
      ".target sm_90\n.visible .entry a_rather_long_kernel_name_of_forty_chars(\n"
      ".param .align 64 .b8 a_rather_long_kernel_name_of_forty_chars_param_2[256]\n)\n{\n"
      "// DUA_SM90A mov.b64 %rd1, DUA_ENTRY_PARAM_2;\n// DUA_SM90A mov.b64 %rd2, DUA_ENTRY_PARAM_2;\n"
      "// DUA_ENTRY_PARAM_0 in a plain comment\n}\n.entry k2(\n)\n{\n"
      "// DUA_SM90A mov.b64 %rd1, DUA_ENTRY_PARAM_13;\n}\n";
  int markers = -1;
  char *out = dua_ptx_to_sm90a(ptx, &markers);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(markers, 3);
  ck_assert_str_eq(out, ".target sm_90a\n.visible .entry a_rather_long_kernel_name_of_forty_chars(\n"
                        ".param .align 64 .b8 a_rather_long_kernel_name_of_forty_chars_param_2[256]\n)\n{\n"
                        "mov.b64 %rd1, a_rather_long_kernel_name_of_forty_chars_param_2;\n"
                        "mov.b64 %rd2, a_rather_long_kernel_name_of_forty_chars_param_2;\n"
                        "// a_rather_long_kernel_name_of_forty_chars_param_0 in a plain comment\n}\n"
                        ".entry k2(\n)\n{\nmov.b64 %rd1, k2_param_13;\n}\n");
  /* only where the sm_90a rewrite runs: the caps alone leave the text as it is */
  int caps = -1;
  char *plain = dua_ptx_caps(ptx, &caps);
  ck_assert_ptr_nonnull(plain);
  ck_assert_str_eq(plain, ptx);
  free(plain);
  free(out);
}
END_TEST

START_TEST(no_markers_is_a_plain_retarget) {
  int markers = -1;
  char *out = dua_ptx_to_sm90a(".target sm_90\nret;\n", &markers);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(markers, 0);
  ck_assert_str_eq(out, ".target sm_90a\nret;\n");
  free(out);
}
END_TEST

START_TEST(register_cap_goes_to_its_own_entry) {
  const char *ptx = ".target sm_90\n.entry first(\n.param .u32 a\n)\n.reqntid 128, 1, 1\n{\n"
                    "// DUA_MAXNREG 168\nret;\n}\n.entry second(\n)\n{\nret;\n}\n"
                    ".entry third(\n)\n{\n// DUA_MAXNREG 999\nret;\n}\n"
                    ".entry fourth(\n)\n{\n// DUA_MAXNREG 96\n// DUA_SM90A x;\n}\n";
  int markers = -1;
  char *out = dua_ptx_to_sm90a(ptx, &markers);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(markers, 1);
  /* first and fourth capped; second has no marker; third's 999 is out of range and ignored */
  ck_assert_str_eq(out,
                   ".target sm_90a\n.entry first(\n.param .u32 a\n)\n.reqntid 128, 1, 1\n.maxnreg 168\n{\n"
                   "// DUA_MAXNREG 168\nret;\n}\n.entry second(\n)\n{\nret;\n}\n"
                   ".entry third(\n)\n{\n// DUA_MAXNREG 999\nret;\n}\n"
                   ".entry fourth(\n)\n.maxnreg 96\n{\n// DUA_MAXNREG 96\nx;\n}\n");
  free(out);
}
END_TEST

START_TEST(register_cap_in_other_layouts) {
  /* ".visible .entry" with the brace on the signature's line; an ".entry " inside a comment is no entry */
  const char *ptx = ".target sm_90\n.visible .entry k(.param .u32 a) {\n// not an .entry x(\n"
                    "// DUA_MAXNREG 128\n{ inner }\n}\n";
  int markers = -1;
  char *out = dua_ptx_to_sm90a(ptx, &markers);
  ck_assert_ptr_nonnull(out);
  ck_assert_str_eq(out, ".target sm_90a\n.visible .entry k(.param .u32 a) \n.maxnreg 128\n{\n"
                        "// not an .entry x(\n// DUA_MAXNREG 128\n{ inner }\n}\n");
  free(out);
}
END_TEST

/* dua_ptx_caps(ptx) gives want with want_caps caps */
static void expect_caps(const char *ptx, const char *want, int want_caps) {
  int caps = -1;
  char *out = dua_ptx_caps(ptx, &caps);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(caps, want_caps);
  ck_assert_str_eq(out, want);
  free(out);
}

START_TEST(caps_alone_on_any_target) {
  /* an mma.sync program (sm_80 here): its cap applied, the target and any DUA_SM90A comment left as they are
   */
  expect_caps(".target sm_80\n.entry k(\n)\n{\n// DUA_MAXNREG 168\n// DUA_SM90A x;\n}\n"
              ".entry j(\n)\n{\nret;\n}\n",
              ".target sm_80\n.entry k(\n)\n.maxnreg 168\n{\n// DUA_MAXNREG 168\n// DUA_SM90A x;\n}\n"
              ".entry j(\n)\n{\nret;\n}\n",
              1);
  expect_caps(".target sm_90\n.entry k(\n)\n{\n// DUA_MAXNREG 168\n}\n", /* Hopper: stays sm_90 */
              ".target sm_90\n.entry k(\n)\n.maxnreg 168\n{\n// DUA_MAXNREG 168\n}\n", 1);
  expect_caps("no entry\n", "no entry\n", 0); /* nothing to do is no error */
}
END_TEST

START_TEST(other_targets_refused) {
  const char *bad[] = {".target sm_80\n// DUA_SM90A x;\n", ".target sm_90a\n", ".target sm_900\n",
                       "no target\n", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int markers = -1;
    ck_assert_msg(dua_ptx_to_sm90a(bad[i], &markers) == NULL, "accepted \"%s\"", bad[i]);
    ck_assert_int_eq(markers, 0);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("ptx_sm90a");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, markers_uncommented_and_target_retargeted);
  tcase_add_test(tc, no_markers_is_a_plain_retarget);
  tcase_add_test(tc, entry_parameter_names);
  tcase_add_test(tc, register_cap_goes_to_its_own_entry);
  tcase_add_test(tc, register_cap_in_other_layouts);
  tcase_add_test(tc, caps_alone_on_any_target);
  tcase_add_test(tc, other_targets_refused);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
