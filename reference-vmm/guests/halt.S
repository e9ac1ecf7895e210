# halt: enter and halt. Measures start-up time to the first guest instruction.
.include "common.inc"

.text
start:
    hlt
    jmp start
