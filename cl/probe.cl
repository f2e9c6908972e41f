/* probe.cl: trivial kernel used to read the device's preferred work-group size multiple. */
__kernel void dua_probe_axpy(__global float *y, __global const float *x, float a) {
  size_t i = get_global_id(0);
  y[i] += a * x[i];
}
