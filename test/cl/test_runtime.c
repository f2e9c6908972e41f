/* test_runtime.c: device selection, contexts (own and wrapped), buffers, argument validation, build
 * failures with logs, DUA_CL_DIR and the log callback, on the default OpenCL device (PoCL in CI). */
#include "dua_cl.h"
#include "runtime/context_internal.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(default_context_has_probed_device) {
  dua_context *ctx = test_context();
  dua_device_info info;
  ck_assert_int_eq(dua_context_device_info(ctx, &info), DUA_SUCCESS);
  ck_assert_msg(strlen(info.name) > 0, "device has no name");
  ck_assert_uint_gt(info.compute_units, 0);
  ck_assert_uint_gt(info.max_work_group_size, 0);
  ck_assert_uint_gt(info.local_mem_bytes, 0);
  ck_assert_uint_gt(info.preferred_work_group_multiple, 0); /* from the compile-and-run probe */
  if (!info.nv_mma_probed)
    ck_assert_int_eq(info.nv_mma_f16 | info.nv_mma_tf32, 0);
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(selection_by_index_type_and_name) {
  int count = 0;
  ck_assert_int_eq(dua_device_count(&count), DUA_SUCCESS);
  ck_assert_int_gt(count, 0);
  dua_device_info first;
  ck_assert_int_eq(dua_device_get_info(0, &first), DUA_SUCCESS);
  ck_assert_int_eq(dua_device_get_info(count, &first), DUA_ERROR_NO_DEVICE);
  ck_assert_int_eq(dua_device_get_info(0, &first), DUA_SUCCESS);

  dua_context_options o;
  dua_context_options_init(&o);
  dua_context *ctx = NULL;
  dua_device_info got;
  /* by index */
  o.device_index = 0;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  dua_context_device_info(ctx, &got);
  ck_assert_str_eq(got.name, first.name);
  ck_assert_int_eq(got.index, 0);
  dua_context_destroy(ctx);
  /* by type word and by case-flipped name substring */
  o.device_index = -1;
  o.selector = first.type == DUA_DEVICE_GPU ? "gpu" : first.type == DUA_DEVICE_CPU ? "cpu" : "0";
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  dua_context_destroy(ctx);
  char sub[8];
  snprintf(sub, sizeof sub, "%.4s", first.name);
  for (char *p = sub; *p; p++)
    *p = (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : (*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
  o.selector = sub;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  dua_context_device_info(ctx, &got);
  dua_context_destroy(ctx);
  /* out of range and unknown names */
  ctx = (dua_context *)&o; /* must stay untouched */
  o.selector = "99";
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_ERROR_NO_DEVICE);
  o.selector = "no-such-device-xyz";
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_ERROR_NO_DEVICE);
  o.selector = NULL;
  o.device_index = count + 3;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_ERROR_NO_DEVICE);
  ck_assert_ptr_eq(ctx, (dua_context *)&o);
}
END_TEST

START_TEST(selection_by_environment) {
  setenv("DUA_DEVICE", "0", 1);
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(NULL, &ctx), DUA_SUCCESS);
  dua_device_info got;
  dua_context_device_info(ctx, &got);
  ck_assert_int_eq(got.index, 0);
  dua_context_destroy(ctx);
  setenv("DUA_DEVICE", "no-such-device-xyz", 1);
  ck_assert_int_eq(dua_context_create(NULL, &ctx), DUA_ERROR_NO_DEVICE);
  unsetenv("DUA_DEVICE");
}
END_TEST

START_TEST(interop_with_callers_objects) {
  int count = 0;
  ck_assert_int_eq(dua_device_count(&count), DUA_SUCCESS);
  cl_platform_id platform;
  cl_device_id device;
  ck_assert_int_eq(dua_device_lookup(0, &platform, &device), DUA_SUCCESS);
  cl_int err;
  cl_context clctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  ck_assert_int_eq(err, CL_SUCCESS);
  cl_command_queue queue = clCreateCommandQueue(clctx, device, 0, &err);
  ck_assert_int_eq(err, CL_SUCCESS);
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create_from_cl(clctx, device, queue, NULL, &ctx), DUA_SUCCESS);
  ck_assert_ptr_eq(dua_context_cl_queue(ctx), queue);
  ck_assert_ptr_eq(dua_context_cl_context(ctx), clctx);
  ck_assert_ptr_eq(dua_context_cl_device(ctx), device);

  /* a caller's cl_mem, written by the caller and read through dua */
  float host[64], back[64];
  test_rng r = test_rng_make(11);
  for (int i = 0; i < 64; i++)
    host[i] = test_rng_float(&r);
  cl_mem mem = clCreateBuffer(clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof host, host, &err);
  ck_assert_int_eq(err, CL_SUCCESS);
  dua_buffer *buf = NULL;
  ck_assert_int_eq(dua_buffer_wrap_cl(ctx, mem, &buf), DUA_SUCCESS);
  ck_assert_uint_eq(dua_buffer_size(buf), sizeof host);
  ck_assert_ptr_eq(dua_buffer_cl_mem(buf), mem);
  ck_assert_int_eq(dua_buffer_read(buf, 0, sizeof back, back), DUA_SUCCESS);
  ck_assert_mem_eq(host, back, sizeof host);
  dua_buffer_destroy(buf);
  dua_context_destroy(ctx);
  /* the caller's objects are still alive and usable */
  ck_assert_int_eq(clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, sizeof back, back, 0, NULL, NULL), CL_SUCCESS);
  ck_assert_mem_eq(host, back, sizeof host);

  /* without a queue dua makes its own; with a foreign device it refuses */
  ck_assert_int_eq(dua_context_create_from_cl(clctx, device, NULL, NULL, &ctx), DUA_SUCCESS);
  ck_assert_ptr_nonnull(dua_context_cl_queue(ctx));
  ck_assert_ptr_ne(dua_context_cl_queue(ctx), queue);
  dua_context_destroy(ctx);
  ck_assert_int_eq(dua_context_create_from_cl(clctx, (cl_device_id)&r, queue, NULL, &ctx),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_create_from_cl(NULL, device, queue, NULL, &ctx), DUA_ERROR_INVALID_ARGUMENT);

  /* an out-of-order queue is refused: dua's launches depend on each other */
  cl_command_queue ooo = clCreateCommandQueue(clctx, device, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
  if (err == CL_SUCCESS) {
    ck_assert_int_eq(dua_context_create_from_cl(clctx, device, ooo, NULL, &ctx), DUA_ERROR_UNSUPPORTED);
    clReleaseCommandQueue(ooo);
  } else { /* the device has no out-of-order queues: nothing dua could be handed */
    ck_assert_int_eq(err, CL_INVALID_QUEUE_PROPERTIES);
  }

  /* a cl_mem of another cl_context is refused */
  cl_context other = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
  cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, 64, NULL, &err);
  ck_assert_int_eq(dua_context_create_from_cl(clctx, device, queue, NULL, &ctx), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_wrap_cl(ctx, foreign, &buf), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "another cl_context"));
  dua_context_destroy(ctx);
  clReleaseMemObject(foreign);
  clReleaseContext(other);
  clReleaseMemObject(mem);
  clReleaseCommandQueue(queue);
  clReleaseContext(clctx);
}
END_TEST

START_TEST(buffers_validate_and_copy) {
  dua_context *ctx = test_context();
  dua_buffer *buf = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, 0, &buf), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "bytes is 0"));
  ck_assert_int_eq(dua_buffer_create(ctx, 16, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_buffer_create(ctx, SIZE_MAX, &buf), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(buf);
  ck_assert_int_eq(dua_buffer_create(ctx, 256, &buf), DUA_SUCCESS);
  unsigned char data[256], back[256];
  for (int i = 0; i < 256; i++)
    data[i] = (unsigned char)(i * 7 + 3);
  ck_assert_int_eq(dua_buffer_write(buf, 0, 256, data), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_write(buf, 200, 100, data), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "exceeds"));
  ck_assert_int_eq(dua_buffer_write(buf, SIZE_MAX, 2, data), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_buffer_read(buf, 0, 16, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_buffer_fill_bytes(buf, 64, 64, 0xA5), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_read(buf, 0, 256, back), DUA_SUCCESS);
  for (int i = 0; i < 256; i++)
    ck_assert_uint_eq(back[i], (i >= 64 && i < 128) ? 0xA5 : data[i]);

  /* tensor views are checked against their buffer */
  dua_tensor t = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 2, 4, 8);
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "q"), DUA_SUCCESS);
  t.offset = 4;
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "q"), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "tensor q"));
  t.offset = 2;
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "q"), DUA_ERROR_INVALID_ARGUMENT);
  t = dua_tensor_contiguous(buf, 0, DUA_F32, 1, 2, 4, 9);
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "k"), DUA_ERROR_INVALID_ARGUMENT);
  t = dua_tensor_contiguous(buf, 0, DUA_F16, 1, 2, 4, 16);
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "v"), DUA_SUCCESS);
  t.shape[1] = 0;
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "v"), DUA_ERROR_INVALID_ARGUMENT);
  t = dua_tensor_contiguous(buf, 0, DUA_F16, 1, 2, 4, 16);
  t.strides[0] = INT64_MAX / 2;
  ck_assert_int_eq(dua_tensor_check(ctx, &t, "v"), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_tensor_check(ctx, NULL, "o"), DUA_ERROR_INVALID_ARGUMENT);
  dua_buffer_destroy(buf);
  dua_context_destroy(ctx);
}
END_TEST

/* dua_buffer_read_rows (the trainer's first-token rows): rows at a pitch, packed on the host; nothing
 * outside the rows is touched; bad pitches and ranges are refused with the value named. */
START_TEST(strided_rows_read_packed) {
  dua_context *ctx = test_context();
  dua_buffer *buf = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, 1000, &buf), DUA_SUCCESS);
  unsigned char data[1000], back[7 * 24 + 1];
  for (int i = 0; i < 1000; i++)
    data[i] = (unsigned char)(i * 13 + 5);
  ck_assert_int_eq(dua_buffer_write(buf, 0, 1000, data), DUA_SUCCESS);
  memset(back, 0xEE, sizeof back);
  /* 7 rows of 24 bytes, pitch 136, from byte 44: the last row ends at 44 + 6 * 136 + 24 = 884 */
  ck_assert_int_eq(dua_buffer_read_rows(buf, 44, 24, 136, 7, back), DUA_SUCCESS);
  for (int r = 0; r < 7; r++)
    for (int c = 0; c < 24; c++)
      ck_assert_uint_eq(back[r * 24 + c], data[44 + r * 136 + c]);
  ck_assert_uint_eq(back[7 * 24], 0xEE);
  /* the last row may end exactly at the buffer's end; one byte further is refused */
  ck_assert_int_eq(dua_buffer_read_rows(buf, 1000 - 24 - 6 * 136, 24, 136, 7, back), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_read_rows(buf, 1000 - 23 - 6 * 136, 24, 136, 7, back),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "exceeds"));
  ck_assert_int_eq(dua_buffer_read_rows(buf, 0, 24, 16, 2, back), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "row pitch 16"));
  ck_assert_int_eq(dua_buffer_read_rows(buf, 0, 8, SIZE_MAX / 2, 3, back), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_buffer_read_rows(buf, 0, 8, 16, 2, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_buffer_read_rows(buf, 0, 8, 16, 0, NULL), DUA_SUCCESS); /* nothing to read */
  dua_buffer_destroy(buf);
  dua_context_destroy(ctx);
}
END_TEST

static int log_calls;
static char log_last[4096];
static void capture_log(dua_log_level level, const char *message, void *user) {
  (void)level;
  (void)user;
  log_calls++;
  snprintf(log_last, sizeof log_last, "%s", message);
}

START_TEST(build_failure_keeps_the_log) {
  char dir[] = "/tmp/dua-cl-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/broken.cl", dir);
  FILE *f = fopen(path, "w");
  fputs("__kernel void broken(__global float *x) { x[0] = undeclared_identifier_42; }\n", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/probe.cl", dir); /* the probe needs its source too */
  f = fopen(path, "w");
  fputs("__kernel void dua_probe_axpy(__global float *y, __global const float *x, float a) {"
        " y[get_global_id(0)] += a * x[get_global_id(0)]; }\n",
        f);
  fclose(f);
  setenv("DUA_CL_DIR", dir, 1);
  setenv("DUA_CACHE", "0", 1);
  dua_context_options o;
  dua_context_options_init(&o);
  o.log = capture_log;
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  cl_program program = NULL;
  log_calls = 0;
  ck_assert_int_eq(dua_program_get(ctx, "broken", "-DFOO=1", &program), DUA_ERROR_BUILD_FAILED);
  const char *err = dua_context_last_error(ctx);
  ck_assert_ptr_nonnull(strstr(err, "broken"));
  ck_assert_ptr_nonnull(strstr(err, "-DFOO=1"));
  ck_assert_ptr_nonnull(strstr(err, "OpenCL build log"));
  ck_assert_ptr_nonnull(strstr(err, "undeclared_identifier_42"));
  ck_assert_int_gt(log_calls, 0); /* the error reached the callback, not stdout */
  ck_assert_int_eq(dua_program_get(ctx, "missing_file", "", &program), DUA_ERROR_IO);
  ck_assert_ptr_nonnull(strstr(dua_context_last_error(ctx), "missing_file.cl"));
  dua_context_destroy(ctx);
  unsetenv("DUA_CL_DIR");
  unsetenv("DUA_CACHE");
}
END_TEST

START_TEST(embedded_sources_build_and_run) {
  dua_context *ctx = test_context();
  cl_kernel k1 = NULL, k2 = NULL;
  ck_assert_int_eq(dua_program_kernel(ctx, "probe", "", "dua_probe_axpy", &k1), DUA_SUCCESS);
  ck_assert_int_eq(dua_program_kernel(ctx, "probe", "", "dua_probe_axpy", &k2), DUA_SUCCESS);
  ck_assert_ptr_eq(k1, k2); /* kernels are reused, not re-created */
  ck_assert_int_eq(dua_program_kernel(ctx, "probe", "", "no_such_kernel", &k2), CL_INVALID_KERNEL_NAME);
  ck_assert_int_eq(dua_program_kernel(ctx, "no_such_source", "", "x", &k2), DUA_ERROR_INTERNAL);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("runtime");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, default_context_has_probed_device);
  tcase_add_test(tc, selection_by_index_type_and_name);
  tcase_add_test(tc, selection_by_environment);
  tcase_add_test(tc, interop_with_callers_objects);
  tcase_add_test(tc, buffers_validate_and_copy);
  tcase_add_test(tc, strided_rows_read_packed);
  tcase_add_test(tc, build_failure_keeps_the_log);
  tcase_add_test(tc, embedded_sources_build_and_run);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
