// libjpeg decoding behind setjmp: libjpeg's error_exit must not return, so it longjmps back into
// the C function that called the library (never through Swift frames).
#include "CCodecs.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

struct pt_jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int status;       // PT_CODEC_* to return after the longjmp
    int warnings;
    char message[PT_CODEC_MESSAGE_MAX];
    int has_message;  // message holds a failure (1) or the first warning (2)
};

struct pt_jpeg_decoder {
    struct jpeg_decompress_struct cinfo;
    struct pt_jpeg_error err;
    int created;      // jpeg_create_decompress succeeded
    int have_header;  // pt_jpeg_read_header succeeded
    int decoded;
};

static int status_for(int code) {
    switch (code) {
        case JERR_NO_SOI: return PT_CODEC_NOT_IMAGE;
        case JERR_INPUT_EMPTY:
        case JERR_INPUT_EOF: return PT_CODEC_TRUNCATED;
        case JERR_OUT_OF_MEMORY: return PT_CODEC_NO_MEMORY;
        case JERR_BAD_PRECISION:
        case JERR_SOF_UNSUPPORTED:
        case JERR_ARITH_NOTIMPL:
        case JERR_NOT_COMPILED:
        case JERR_CONVERSION_NOTIMPL:
        case JERR_EMPTY_IMAGE: return PT_CODEC_UNSUPPORTED;
        case JERR_BAD_STATE: return PT_CODEC_MISUSE;
        default: return PT_CODEC_CORRUPT;
    }
}

static void on_error_exit(j_common_ptr cinfo) {
    struct pt_jpeg_error *err = (struct pt_jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    err->has_message = 1;
    err->status = status_for(cinfo->err->msg_code);
    longjmp(err->jump, 1);
}

// Warnings (msg_level -1) and trace messages (>= 0). Running out of data is a warning in libjpeg
// (the memory source then inserts a fake EOI and the rest of the image comes out gray); Pillow's
// suspending source instead stops and raises "image file is truncated", so it is an error here.
static void on_emit_message(j_common_ptr cinfo, int msg_level) {
    struct pt_jpeg_error *err = (struct pt_jpeg_error *)cinfo->err;
    if (msg_level >= 0) return;
    err->warnings++;
    cinfo->err->num_warnings++;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        (*cinfo->err->format_message)(cinfo, err->message);
        err->has_message = 1;
        err->status = PT_CODEC_TRUNCATED;
        longjmp(err->jump, 1);
    }
    if (!err->has_message) {
        (*cinfo->err->format_message)(cinfo, err->message);
        err->has_message = 2;
    }
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

pt_jpeg_decoder *pt_jpeg_create(void) {
    pt_jpeg_decoder *volatile dec = (pt_jpeg_decoder *)calloc(1, sizeof(pt_jpeg_decoder));
    if (!dec) return NULL;
    dec->cinfo.err = jpeg_std_error(&dec->err.pub);
    dec->err.pub.error_exit = on_error_exit;
    dec->err.pub.emit_message = on_emit_message;
    dec->err.pub.output_message = on_output_message;
    if (setjmp(dec->err.jump)) {  // jpeg_create_decompress fails only for lack of memory
        free(dec);
        return NULL;
    }
    jpeg_create_decompress(&dec->cinfo);
    dec->created = 1;
    return dec;
}

void pt_jpeg_destroy(pt_jpeg_decoder *dec) {
    if (!dec) return;
    if (dec->created) jpeg_destroy_decompress(&dec->cinfo);  // never errors
    free(dec);
}

const char *pt_jpeg_message(const pt_jpeg_decoder *dec) {
    return dec && dec->err.has_message ? dec->err.message : "";
}

int pt_jpeg_warning_count(const pt_jpeg_decoder *dec) { return dec ? dec->err.warnings : 0; }

static int fail(pt_jpeg_decoder *dec, int status, const char *message) {
    snprintf(dec->err.message, sizeof dec->err.message, "%s", message);
    dec->err.has_message = 1;
    return status;
}

static int color_space_code(J_COLOR_SPACE cs) {
    switch (cs) {
        case JCS_GRAYSCALE: return PT_JPEG_CS_GRAYSCALE;
        case JCS_RGB: return PT_JPEG_CS_RGB;
        case JCS_YCbCr: return PT_JPEG_CS_YCBCR;
        case JCS_CMYK: return PT_JPEG_CS_CMYK;
        case JCS_YCCK: return PT_JPEG_CS_YCCK;
        default: return PT_JPEG_CS_UNKNOWN;
    }
}

int pt_jpeg_read_header(pt_jpeg_decoder *dec, const unsigned char *data, size_t size, pt_jpeg_header *header) {
    if (!dec || !dec->created || dec->have_header || !header) return PT_CODEC_MISUSE;
    memset(header, 0, sizeof *header);
    if (size == 0) return fail(dec, PT_CODEC_TRUNCATED, "the file is empty");
    if (setjmp(dec->err.jump)) {
        jpeg_abort_decompress(&dec->cinfo);
        return dec->err.status;
    }
    jpeg_mem_src(&dec->cinfo, data, (unsigned long)size);
    // require_image = TRUE: a tables-only datastream is an error (JERR_NO_IMAGE).
    jpeg_read_header(&dec->cinfo, TRUE);
    struct jpeg_decompress_struct *c = &dec->cinfo;
    header->width = (int)c->image_width;
    header->height = (int)c->image_height;
    header->components = c->num_components;
    header->color_space = color_space_code(c->jpeg_color_space);
    header->progressive = c->progressive_mode ? 1 : 0;
    header->arithmetic = c->arith_code ? 1 : 0;
    header->saw_adobe = c->saw_Adobe_marker ? 1 : 0;
    header->adobe_transform = c->Adobe_transform;
    header->saw_jfif = c->saw_JFIF_marker ? 1 : 0;
    header->restart_interval = (int)c->restart_interval;
    dec->have_header = 1;
    return PT_CODEC_OK;
}

int pt_jpeg_decode_rgb(pt_jpeg_decoder *dec, unsigned char *rgb, size_t rgb_size) {
    if (!dec || !dec->have_header || dec->decoded || !rgb) return PT_CODEC_MISUSE;
    struct jpeg_decompress_struct *c = &dec->cinfo;
    const size_t width = c->image_width, height = c->image_height;
    if (rgb_size != width * height * 3) return fail(dec, PT_CODEC_MISUSE, "output buffer has the wrong size");
    dec->decoded = 1;

    switch (c->num_components) {  // Pillow: 1 -> "L", 3 -> "RGB", 4 -> "CMYK" (rawmode "CMYK;I")
        case 1: c->out_color_space = JCS_GRAYSCALE; break;
        case 3: c->out_color_space = JCS_RGB; break;
        case 4: c->out_color_space = JCS_CMYK; break;
        default: {
            char msg[64];
            snprintf(msg, sizeof msg, "cannot handle %d-component images", c->num_components);
            return fail(dec, PT_CODEC_UNSUPPORTED, msg);
        }
    }
    // Pillow keeps libjpeg's defaults (its draft mode alone changes them); so do we, explicitly.
    c->dct_method = JDCT_ISLOW;
    c->do_fancy_upsampling = TRUE;
    c->scale_num = 1;
    c->scale_denom = 1;

    if (setjmp(dec->err.jump)) {
        jpeg_abort_decompress(c);
        return dec->err.status;
    }
    jpeg_start_decompress(c);
    if (c->output_width != width || c->output_height != height) {
        jpeg_abort_decompress(c);
        return fail(dec, PT_CODEC_MISUSE, "libjpeg output size differs from the header");
    }
    const size_t row_bytes = width * 3;
    if (c->out_color_space == JCS_RGB) {
        JSAMPROW rows[16];
        while (c->output_scanline < height) {
            size_t y = c->output_scanline;
            JDIMENSION n = 0;
            while (n < 16 && y + n < height) {
                rows[n] = rgb + (y + n) * row_bytes;
                n++;
            }
            jpeg_read_scanlines(c, rows, n);
        }
    } else {
        const int in_channels = c->out_color_space == JCS_GRAYSCALE ? 1 : 4;
        // From libjpeg's image pool: freed by jpeg_abort/jpeg_destroy even after a longjmp.
        JSAMPARRAY line = (*c->mem->alloc_sarray)((j_common_ptr)c, JPOOL_IMAGE,
                                                  (JDIMENSION)(width * in_channels), 1);
        while (c->output_scanline < height) {
            unsigned char *out = rgb + (size_t)c->output_scanline * row_bytes;
            if (jpeg_read_scanlines(c, line, 1) != 1) {
                jpeg_abort_decompress(c);
                return fail(dec, PT_CODEC_TRUNCATED, "libjpeg returned no scanline");
            }
            const JSAMPLE *in = line[0];
            if (in_channels == 1) {
                for (size_t x = 0; x < width; x++) {
                    out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
                }
            } else {
                for (size_t x = 0; x < width; x++) {
                    // "CMYK;I": Pillow stores 255 - sample, then cmyk2rgb (Convert.c).
                    int cc = 255 - in[4 * x], mm = 255 - in[4 * x + 1], yy = 255 - in[4 * x + 2];
                    int nk = in[4 * x + 3];  // 255 - K where K = 255 - sample
                    int t, v;
                    t = cc * nk + 128; v = nk - (((t >> 8) + t) >> 8); out[3 * x] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                    t = mm * nk + 128; v = nk - (((t >> 8) + t) >> 8); out[3 * x + 1] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                    t = yy * nk + 128; v = nk - (((t >> 8) + t) >> 8); out[3 * x + 2] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    // Reads up to EOI; a missing EOI is a truncation (Pillow raises there too).
    jpeg_finish_decompress(c);
    return PT_CODEC_OK;
}
