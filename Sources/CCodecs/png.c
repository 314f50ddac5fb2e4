// libpng's row API behind setjmp: libpng's error callback must not return, so it longjmps to
// png_jmpbuf, set here in C (never across Swift frames).
#include "CCodecs.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    char *message;
} pt_png_reader;

static void on_png_error(png_structp png, png_const_charp msg) {
    pt_png_reader *reader = (pt_png_reader *)png_get_error_ptr(png);
    snprintf(reader->message, PT_CODEC_MESSAGE_MAX, "libpng: %s", msg ? msg : "?");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void read_from_memory(png_structp png, png_bytep out, size_t length) {
    pt_png_reader *reader = (pt_png_reader *)png_get_io_ptr(png);
    if (!out || length > reader->size - reader->offset) png_error(png, "read beyond end of data");
    memcpy(out, reader->data + reader->offset, length);
    reader->offset += length;
}

int pt_png_read_raw16(const unsigned char *data, size_t size, int width, int height,
                      unsigned char *out, size_t out_capacity, int *channels, int *color_type,
                      char *message) {
    message[0] = 0;
    if (!data || !out || !channels || !color_type || width <= 0 || height <= 0
        || out_capacity < (size_t)width * (size_t)height * 8) {
        snprintf(message, PT_CODEC_MESSAGE_MAX, "bad arguments");
        return PT_CODEC_MISUSE;
    }
    pt_png_reader reader = {data, size, 0, message};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, on_png_error, on_png_warning);
    if (!png) {
        snprintf(message, PT_CODEC_MESSAGE_MAX, "png_create_read_struct failed (out of memory)");
        return PT_CODEC_NO_MEMORY;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(message, PT_CODEC_MESSAGE_MAX, "png_create_info_struct failed (out of memory)");
        return PT_CODEC_NO_MEMORY;
    }
    // `png` and `info` are not modified after this point, so they are valid after a longjmp.
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return strstr(message, "read beyond end of data") ? PT_CODEC_TRUNCATED : PT_CODEC_CORRUPT;
    }
    // Same settings as the simplified pass: benign errors are warnings, and after the header the
    // chunks it does not use are skipped.
    png_set_benign_errors(png, 1);
    png_set_read_fn(png, &reader, read_from_memory);
    png_read_info(png, info);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    static const png_byte used[] = "bKGD\0cHRM\0gAMA\0iCCP\0sBIT\0sRGB\0";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, used, (int)(sizeof used / 5));
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t row_bytes = png_get_rowbytes(png, info);
    int n = png_get_channels(png, info);
    if (png_get_bit_depth(png, info) != 16 || n < 1 || n > 4
        || (int)png_get_image_width(png, info) != width || (int)png_get_image_height(png, info) != height
        || row_bytes != (size_t)width * (size_t)n * 2) {
        snprintf(message, PT_CODEC_MESSAGE_MAX, "the row API disagrees about the image layout");
        png_destroy_read_struct(&png, &info, NULL);
        return PT_CODEC_MISUSE;
    }
    *channels = n;
    *color_type = png_get_color_type(png, info);
    for (int pass = 0; pass < passes; pass++) {
        for (int y = 0; y < height; y++) png_read_row(png, out + (size_t)y * row_bytes, NULL);
    }
    png_destroy_read_struct(&png, &info, NULL);
    return PT_CODEC_OK;
}
