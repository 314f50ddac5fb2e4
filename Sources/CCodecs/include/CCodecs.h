#ifndef PT_CCODECS_H
#define PT_CCODECS_H
// setjmp-safe wrappers around libjpeg / libpng calls whose errors longjmp (Swift cannot).
// Placeholder: filled by the JPEG decoding work.
int pt_codecs_version(void);
#endif
