/* metrics.h: GET /metrics in the Prometheus text format. */
#ifndef MICROSERVICE_METRICS_H
#define MICROSERVICE_METRICS_H

#include "codec.h"
#include "runtime.h"

/* Appends the text of every metric of the process to out. */
void metrics_render(runtime *rt, codec_buf *out);

#endif
