# pio-loop: N `out` instructions, then `hlt`. Measures the exit round trip.
# In: rdi = N (the VMM's --count).
.include "common.inc"

.text
start:
    test rdi, rdi
    jz done
1:  out PORT_TICK, al
    dec rdi
    jnz 1b
done:
    hlt
    jmp done
