# irq-storm: alternate long interrupts-masked stretches (cli ... sti) and open
# stretches, each made of `out` exits, so the VMM gets control at arbitrary
# moments and raises interrupts (vector IRQ_VECTOR) through its injector.
# The handler counts deliveries, and deliveries that arrived while the guest
# was inside a masked stretch (which must never happen).
# In: rdi = N interrupts the VMM will raise, rsi = max stretches (safety bound).
# Out: report 0 = delivered, 1 = delivered while masked, 2 = stretches run.
.include "common.inc"

.equ STRETCH, 16            # `out` exits per stretch

.text
start:
    mov r12, rdi
    mov r13, rsi
    SET_GATE idt, IRQ_VECTOR, irq_handler
    lidt [rip + idtr]

next_stretch:
    cmp qword ptr [rip + delivered], r12
    jae finish
    cmp qword ptr [rip + stretches], r13
    jae finish
    inc qword ptr [rip + stretches]

    MASKED_STRETCH STRETCH

    # Open stretch: interrupts may arrive between any two instructions.
    TICKS STRETCH
    jmp next_stretch

finish:
    cli
    REPORT 0, dword ptr [rip + delivered]
    REPORT 1, dword ptr [rip + delivered_while_masked]
    REPORT 2, dword ptr [rip + stretches]
3:  hlt
    jmp 3b

irq_handler:
    inc qword ptr [rip + delivered]
    cmp byte ptr [rip + masked], 0
    je 4f
    inc qword ptr [rip + delivered_while_masked]
4:  iretq

.balign 8
delivered:              .quad 0
delivered_while_masked: .quad 0
stretches:              .quad 0
masked:                 .quad 0
IDT_TABLE
