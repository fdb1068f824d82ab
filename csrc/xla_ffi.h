/* The part of XLA's FFI C API (xla/ffi/api/c_api.h, API version 0.3 as jaxlib 0.10 ships it)
 * that fastbp's custom-call targets use, declared here from its documentation so that building
 * the C backend needs no jaxlib: a handler receives one XLA_FFI_CallFrame (its buffers,
 * results and attributes) and returns NULL or an error made by the API's XLA_FFI_Error_Create.
 * Layouts must match XLA's byte for byte; fastbp/jax.py checks at import that the running
 * jaxlib speaks this major version and at least this minor one (else it keeps the callback
 * path), and XLA checks the version the handlers report (XLA_FFI_Metadata) at registration. */
#ifndef FBP_XLA_FFI_H
#define FBP_XLA_FFI_H
#include <stddef.h>
#include <stdint.h>

#define FBP_XLA_FFI_API_MAJOR 0
#define FBP_XLA_FFI_API_MINOR 3

typedef enum { XLA_FFI_Extension_Metadata = 1 } XLA_FFI_Extension_Type;

typedef struct XLA_FFI_Extension_Base {
    size_t struct_size;
    XLA_FFI_Extension_Type type;
    struct XLA_FFI_Extension_Base *next;
} XLA_FFI_Extension_Base;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    int major_version;
    int minor_version;
} XLA_FFI_Api_Version;

typedef struct XLA_FFI_Error XLA_FFI_Error; /* opaque: made and owned by XLA */

typedef enum {
    XLA_FFI_Error_Code_INVALID_ARGUMENT = 3,
    XLA_FFI_Error_Code_RESOURCE_EXHAUSTED = 8,
    XLA_FFI_Error_Code_INTERNAL = 13,
} XLA_FFI_Error_Code;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    const char *message;
    XLA_FFI_Error_Code errc;
} XLA_FFI_Error_Create_Args;

typedef XLA_FFI_Error *XLA_FFI_Error_Create(XLA_FFI_Error_Create_Args *args);

/* the API's function table; only its first entry is used */
typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    XLA_FFI_Api_Version api_version;
    const void *internal_api;
    XLA_FFI_Error_Create *XLA_FFI_Error_Create;
} XLA_FFI_Api;

typedef enum {
    XLA_FFI_DataType_S32 = 4,
    XLA_FFI_DataType_S64 = 5,
    XLA_FFI_DataType_F32 = 11,
    XLA_FFI_DataType_F64 = 12,
} XLA_FFI_DataType;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    XLA_FFI_DataType dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} XLA_FFI_Buffer;

typedef enum { XLA_FFI_ArgType_BUFFER = 1 } XLA_FFI_ArgType;
typedef enum { XLA_FFI_RetType_BUFFER = 1 } XLA_FFI_RetType;
typedef enum { XLA_FFI_AttrType_SCALAR = 3 } XLA_FFI_AttrType;

typedef struct {
    const char *ptr;
    size_t len;
} XLA_FFI_ByteSpan;

typedef struct {
    XLA_FFI_DataType dtype;
    void *value;
} XLA_FFI_Scalar;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    int64_t size;
    XLA_FFI_ArgType *types;
    void **args; /* XLA_FFI_Buffer * each */
} XLA_FFI_Args;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    int64_t size;
    XLA_FFI_RetType *types;
    void **rets; /* XLA_FFI_Buffer * each */
} XLA_FFI_Rets;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    int64_t size;
    XLA_FFI_AttrType *types;
    XLA_FFI_ByteSpan **names;
    void **attrs; /* XLA_FFI_Scalar * for a scalar */
} XLA_FFI_Attrs;

typedef enum { XLA_FFI_ExecutionStage_EXECUTE = 3 } XLA_FFI_ExecutionStage;

typedef struct {
    size_t struct_size;
    XLA_FFI_Extension_Base *extension_start;
    const XLA_FFI_Api *api;
    void *ctx;
    XLA_FFI_ExecutionStage stage;
    XLA_FFI_Args args;
    XLA_FFI_Rets rets;
    XLA_FFI_Attrs attrs;
    void *future;
} XLA_FFI_CallFrame;

/* what a handler reports when XLA calls it with this extension (at registration) */
typedef struct {
    size_t struct_size;
    XLA_FFI_Api_Version api_version;
    uint32_t traits;
} XLA_FFI_Metadata;

typedef struct {
    XLA_FFI_Extension_Base extension_base;
    XLA_FFI_Metadata *metadata;
} XLA_FFI_Metadata_Extension;

#endif
