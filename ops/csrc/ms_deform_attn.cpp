// The op schemas, declared once; the CPU and CUDA implementations register themselves in their own files.
#include <Python.h>
#include <torch/library.h>

// Lets the library be imported as a Python module (`pip install ./ops` builds it as one); importing it
// runs the registrations below. The JIT build loads the same library with torch.ops.load_library.
extern "C" {
PyMODINIT_FUNC PyInit_ms_deform_attn_ext(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "ms_deform_attn_ext", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(deformable_detr_ops, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
