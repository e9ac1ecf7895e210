# timer: a periodic interrupt (vector TIMER_VECTOR) raised by one host timer
# thread on every vCPU. Reentrant: every vCPU runs this same code with its own
# stack and keeps its state in registers (r15 = 1 while interrupts are masked).
# Each vCPU software-enables its xAPIC (SVR bit 8), then loops: a long
# interrupts-masked stretch (cli ... sti, no exits), an open stretch, and,
# every POLL_ROUNDS rounds, one `in PORT_STATUS` (1 = the VMM is stopping). The handler acknowledges each
# interrupt with one `out` (PORT_TIMER_ACK, or PORT_TIMER_ACK_MASKED if it
# arrived inside a masked stretch, which must never happen), then writes the
# xAPIC EOI register. When stopping, one more open stretch takes whatever is
# still pending, then `out PORT_TIMER_DONE`.
# In: rdi = masked-stretch iterations (>= 1), rsi = open-stretch iterations (>= 1).
.include "common.inc"

.equ SPURIOUS_VECTOR, 0xff
.equ POLL_ROUNDS, 8         # rounds between two PORT_STATUS polls

.text
start:
    mov r12, rdi
    mov r13, rsi
    xor r15d, r15d
    mov r14d, POLL_ROUNDS
    SET_GATE idt, TIMER_VECTOR, timer_handler
    SET_GATE idt, SPURIOUS_VECTOR, spurious_handler
    lidt [rip + idtr]
    # Software-enable the xAPIC, spurious vector 0xff (SDM Vol. 3A 11.4.7.2).
    mov rbx, APIC_BASE
    mov dword ptr [rbx + APIC_SVR], 0x100 | SPURIOUS_VECTOR

round:
    cli
    mov r15d, 1
    mov rcx, r12
1:  dec rcx
    jnz 1b
    xor r15d, r15d
    sti
    # Open stretch: the interrupt may arrive between any two instructions.
    mov rcx, r13
2:  dec rcx
    jnz 2b
    # Ask whether the VMM is stopping every POLL_ROUNDS rounds only (one exit).
    dec r14
    jnz round
    mov r14d, POLL_ROUNDS
    in al, PORT_STATUS
    test al, al
    jz round

    # Stopping: one more open stretch takes what is still pending.
    mov rcx, r13
3:  dec rcx
    jnz 3b
    cli
    out PORT_TIMER_DONE, al
4:  hlt
    jmp 4b

timer_handler:
    push rax
    push rbx
    mov al, TIMER_VECTOR
    test r15d, r15d
    jnz 5f
    out PORT_TIMER_ACK, al
    jmp 6f
5:  out PORT_TIMER_ACK_MASKED, al
6:  mov rbx, APIC_BASE
    mov dword ptr [rbx + APIC_EOI], 0
    pop rbx
    pop rax
    iretq

# A spurious interrupt takes no EOI (SDM Vol. 3A 11.9).
spurious_handler:
    iretq

IDT_TABLE
