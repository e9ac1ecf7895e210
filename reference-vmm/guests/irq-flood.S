# irq-flood: an interrupt flood against long interrupts-masked stretches.
# The VMM raises interrupts on FLOOD_VECTORS distinct vectors straight into its
# injector, several per exit, far faster than one-per-exit delivery can drain
# them and far more than the injector's queue holds while the guest is masked.
# The guest alternates masked (cli ... sti) and open stretches of `out` exits,
# like irq-storm. After each open stretch it reads PORT_STATUS: the VMM answers
# 1 once it has raised everything and nothing is left to deliver; then the
# guest reports and halts.
# Every vector has its own stub (push vector; jmp common), so the handler knows
# which vector arrived; it counts deliveries, deliveries inside a masked
# stretch (must be 0) and the sum of delivered vectors (the VMM compares it
# with the sum of the vectors it injected).
# In: rsi = max stretches (safety bound).
# Out: report 0 = delivered, 1 = delivered while masked, 2 = stretches run,
#      3, 4 = sum of delivered vectors (low, high 32 bits).
.include "common.inc"

.equ STRETCH, 32            # `out` exits per stretch

.text
start:
    mov r13, rsi

    # Gate FLOOD_FIRST + i -> stubs + 8 * i (each stub is padded to 8 bytes).
    xor ecx, ecx
1:  lea rax, [rip + stubs]
    lea rax, [rax + rcx * 8]
    lea edx, [rcx + FLOOD_FIRST]
    shl edx, 4
    lea rbx, [rip + idt]
    add rbx, rdx
    WRITE_GATE
    inc ecx
    cmp ecx, FLOOD_VECTORS
    jb 1b
    lidt [rip + idtr]

next_stretch:
    cmp qword ptr [rip + stretches], r13
    jae finish
    inc qword ptr [rip + stretches]

    MASKED_STRETCH STRETCH

    # Open stretch: queued interrupts are delivered here, one per entry.
    TICKS STRETCH
    in eax, PORT_STATUS     # 1 = the VMM has nothing left to deliver
    test eax, eax
    jz next_stretch

finish:
    cli
    REPORT 0, dword ptr [rip + delivered]
    REPORT 1, dword ptr [rip + delivered_while_masked]
    REPORT 2, dword ptr [rip + stretches]
    REPORT 3, dword ptr [rip + vector_sum]
    REPORT 4, dword ptr [rip + vector_sum + 4]
4:  hlt
    jmp 4b

common:                     # [rsp] = vector, then the interrupt frame
    push rax
    mov rax, qword ptr [rsp + 8]
    add qword ptr [rip + vector_sum], rax
    inc qword ptr [rip + delivered]
    cmp byte ptr [rip + masked], 0
    je 5f
    inc qword ptr [rip + delivered_while_masked]
5:  pop rax
    add rsp, 8              # drop the vector; iretq restores RFLAGS
    iretq

.balign 8
stubs:
.set vec, FLOOD_FIRST
.rept FLOOD_VECTORS
    .balign 8
    push vec
    jmp common
    .set vec, vec + 1
.endr

.balign 8
delivered:              .quad 0
delivered_while_masked: .quad 0
stretches:              .quad 0
vector_sum:             .quad 0
masked:                 .quad 0
IDT_TABLE
