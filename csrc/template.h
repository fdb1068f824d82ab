/* The float32 / float64 template: a family file ends its preamble with
 *     #define TEMPLATE_FILE "heads.c"
 *     #include "template.h"
 * and wraps its body in #ifdef REAL, so the body is compiled twice, once per type. In it, REAL
 * is the element type (FBP_DOUBLE says which) and F(name) the suffixed name (name_f64, name_f32). Arithmetic that needs
 * range or accuracy (sums, exp, the softmax) runs in double for both. */
#define REAL double
#define FBP_DOUBLE 1
#define F(name) name##_f64
#include TEMPLATE_FILE
#undef REAL
#undef FBP_DOUBLE
#undef F
#define REAL float
#define FBP_DOUBLE 0
#define F(name) name##_f32
#include TEMPLATE_FILE
#undef REAL
#undef FBP_DOUBLE
#undef F
