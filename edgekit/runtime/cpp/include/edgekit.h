/* edgekit.h: run an edgekit bundle (`edgekit package`) from C. Model-independent: one libedgekit runs any bundle
 * built for its architecture. No exceptions cross this boundary; every call returns a status, and
 * edgekit_last_error() holds the message of the last failure on this thread.
 *
 *   edgekit_model* m;
 *   if (edgekit_load("bundle/", &m) != EDGEKIT_OK) { fprintf(stderr, "%s\n", edgekit_last_error()); return 1; }
 *   edgekit_set_input(m, 0, image, sizeof image);
 *   edgekit_run(m);
 *   edgekit_get_output(m, 0, logits, sizeof logits);
 *   edgekit_free(m);
 */
#ifndef EDGEKIT_H_
#define EDGEKIT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  EDGEKIT_OK = 0,
  EDGEKIT_ERR_ARGUMENT = 1,  /* null pointer, index out of range, unknown name */
  EDGEKIT_ERR_BUNDLE = 2,    /* missing or malformed bundle files */
  EDGEKIT_ERR_TARGET = 3,    /* the bundle was built for another architecture / CPU */
  EDGEKIT_ERR_SIZE = 4,      /* a buffer whose byte size is not the tensor's */
  EDGEKIT_ERR_RUNTIME = 5    /* the TVM runtime failed (message in edgekit_last_error) */
} edgekit_status;

typedef struct edgekit_model edgekit_model;

/* Threads of the TVM thread pool (0 = all cores); call before edgekit_load to size the pool from the start. */
edgekit_status edgekit_set_num_threads(int threads);

edgekit_status edgekit_load(const char* bundle_dir, edgekit_model** out);
void edgekit_free(edgekit_model* model);

int edgekit_num_inputs(const edgekit_model* model);
int edgekit_num_outputs(const edgekit_model* model);
/* Tensor descriptions: `output` 0 for inputs, 1 for outputs. Pointers stay valid until edgekit_free. */
const char* edgekit_name(const edgekit_model* model, int output, int index);
const char* edgekit_dtype(const edgekit_model* model, int output, int index); /* "float32", "int64", ... */
int edgekit_ndim(const edgekit_model* model, int output, int index);
/* An output whose size depends on the data (NonMaxSuppression's detections) has -1 for that dim and 0 bytes until
 * edgekit_run; after each run, edgekit_shape / edgekit_nbytes give that run's. */
const int64_t* edgekit_shape(const edgekit_model* model, int output, int index);
size_t edgekit_nbytes(const edgekit_model* model, int output, int index);
int edgekit_input_index(const edgekit_model* model, const char* name); /* -1 if no such input */

edgekit_status edgekit_set_input(edgekit_model* model, int index, const void* data, size_t nbytes);
edgekit_status edgekit_run(edgekit_model* model);
edgekit_status edgekit_get_output(const edgekit_model* model, int index, void* data, size_t nbytes);
/* A view of output `index` (valid until the next edgekit_run or edgekit_free), or NULL. */
const void* edgekit_output_data(const edgekit_model* model, int index);

const char* edgekit_target(const edgekit_model* model); /* the bundle's target name */
/* The message of this thread's last failed call; valid until the next failing call on this thread. */
const char* edgekit_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* EDGEKIT_H_ */
