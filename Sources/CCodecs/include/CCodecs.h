#ifndef PT_CCODECS_H
#define PT_CCODECS_H
// setjmp-safe wrappers around libjpeg and libpng. Both libraries report errors by calling a handler
// that must not return; Swift cannot catch a longjmp, so every library call that can fail runs here,
// under a setjmp in C, and comes back to Swift as a status code and a message.

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Status codes of the wrappers (macros, so that Swift sees them as Int32 like the return values).
#define PT_CODEC_OK 0
#define PT_CODEC_CORRUPT 1      // the library rejected the data
#define PT_CODEC_TRUNCATED 2    // the data ends before the image does
#define PT_CODEC_NOT_IMAGE 3    // no JPEG SOI marker at the start
#define PT_CODEC_UNSUPPORTED 4  // valid but not handled (e.g. 12-bit samples, 2-component JPEG)
#define PT_CODEC_NO_MEMORY 5
#define PT_CODEC_MISUSE 6       // wrong call order or buffer size (a bug in the caller)

#define PT_CODEC_MESSAGE_MAX 256

// MARK: - JPEG (libjpeg / libjpeg-turbo)

/// Colour space libjpeg inferred from the markers (JFIF, Adobe APP14, component ids).
#define PT_JPEG_CS_UNKNOWN 0
#define PT_JPEG_CS_GRAYSCALE 1
#define PT_JPEG_CS_RGB 2
#define PT_JPEG_CS_YCBCR 3
#define PT_JPEG_CS_CMYK 4
#define PT_JPEG_CS_YCCK 5

typedef struct pt_jpeg_header {
    int width;
    int height;
    int components;       // components in the frame (1, 3, 4 handled)
    int color_space;      // PT_JPEG_CS_*
    int progressive;      // 1 for SOF2/SOF6/SOF10/SOF14
    int arithmetic;       // 1 for arithmetic coding
    int saw_adobe;        // an APP14 "Adobe" marker was read
    int adobe_transform;  // its transform byte (0: none / RGB / CMYK, 1: YCbCr, 2: YCCK)
    int saw_jfif;
    int restart_interval; // in MCUs, 0 if none
} pt_jpeg_header;

/// A decoder for one image. Opaque; create, read the header, decode, destroy.
typedef struct pt_jpeg_decoder pt_jpeg_decoder;

/// A new decoder, or NULL if out of memory.
pt_jpeg_decoder *pt_jpeg_create(void);
/// Frees everything the decoder holds. NULL is ignored.
void pt_jpeg_destroy(pt_jpeg_decoder *dec);

/// Reads the markers up to the first scan of `data` (which must stay valid until the decoder is
/// destroyed) and fills `header`. Returns a PT_CODEC_* status; on failure see pt_jpeg_message.
int pt_jpeg_read_header(pt_jpeg_decoder *dec, const unsigned char *data, size_t size, pt_jpeg_header *header);

/// Decodes the whole image into `rgb` (`width * height * 3` bytes, rows of interleaved R, G, B)
/// converting as Pillow's `Image.open(p).convert("RGB")` does:
///   1 component:  decoded as grayscale (JCS_GRAYSCALE) and replicated to R = G = B;
///   3 components: libjpeg's colour conversion to JCS_RGB (from YCbCr, or none for RGB);
///   4 components: decoded to JCS_CMYK (libjpeg converts YCCK to CMYK), every sample inverted
///                 (Pillow always assumes Adobe's inverted polarity, whatever the markers say), then
///                 Pillow's cmyk2rgb: nk = 255 - K, R = clip(nk - (C * nk) / 255) with Pillow's
///                 rounding MULDIV255, likewise G from M and B from Y.
/// libjpeg's defaults are kept (JDCT_ISLOW, fancy upsampling, no block smoothing change), as Pillow
/// keeps them outside draft mode. Any "premature end of data" warning is an error
/// (PT_CODEC_TRUNCATED), as Pillow raises "image file is truncated"; other libjpeg warnings (corrupt
/// entropy data that libjpeg recovers from) are counted and ignored, as in Pillow.
int pt_jpeg_decode_rgb(pt_jpeg_decoder *dec, unsigned char *rgb, size_t rgb_size);

/// The message of the last failure, or of the first warning if none failed ("" if neither).
const char *pt_jpeg_message(const pt_jpeg_decoder *dec);
/// How many libjpeg warnings (recoverable corrupt-data notices) the decoder has seen.
int pt_jpeg_warning_count(const pt_jpeg_decoder *dec);

// MARK: - PNG (libpng row API)

/// Reads a 16-bit PNG's samples as stored, with libpng's row API and no transformations except
/// de-interlacing: `out` (at least `width * height * 8` bytes) gets `height` rows of
/// `width * channels` big-endian 16-bit samples, `channels` (1 to 4) and the PNG `color_type` are
/// set. A file whose size or depth differs from `width` x `height` x 16 bits is PT_CODEC_MISUSE.
/// Unknown chunks are skipped as Pillow skips them. Returns a PT_CODEC_* status; on failure
/// `message` (PT_CODEC_MESSAGE_MAX bytes) says why (PT_CODEC_TRUNCATED when the data ran out).
int pt_png_read_raw16(const unsigned char *data, size_t size, int width, int height,
                      unsigned char *out, size_t out_capacity, int *channels, int *color_type,
                      char *message);

#ifdef __cplusplus
}
#endif
#endif
