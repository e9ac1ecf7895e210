# exceptions: ask the VMM, one at a time, to inject #GP with an error code,
# #PF with a CR2 payload and an NMI; each handler records what it received.
# Out: report 0 = #GP vector seen (13), 1 = #GP error code,
#      2 = #PF vector seen (14), 3 = #PF error code, 4 = CR2 low, 5 = CR2 high,
#      6 = NMIs seen.
.include "common.inc"

.text
start:
    SET_GATE idt, 2, nmi_handler
    SET_GATE idt, 13, gp_handler
    SET_GATE idt, 14, pf_handler
    lidt [rip + idtr]

    mov al, SYNC_INJECT_GP
    out PORT_SYNC, al       # the #GP arrives right after this instruction
    mov al, SYNC_INJECT_PF
    out PORT_SYNC, al
    mov al, SYNC_INJECT_NMI
    out PORT_SYNC, al
    nop                     # the NMI is delivered at the next instruction boundary

    REPORT 0, dword ptr [rip + gp_vector]
    REPORT 1, dword ptr [rip + gp_error]
    REPORT 2, dword ptr [rip + pf_vector]
    REPORT 3, dword ptr [rip + pf_error]
    REPORT 4, dword ptr [rip + pf_cr2]
    REPORT 5, dword ptr [rip + pf_cr2 + 4]
    REPORT 6, dword ptr [rip + nmis]
1:  hlt
    jmp 1b

gp_handler:                 # #GP pushes an error code
    mov dword ptr [rip + gp_vector], 13
    pop qword ptr [rip + gp_error]
    iretq

pf_handler:                 # #PF pushes an error code; the address is in CR2
    mov dword ptr [rip + pf_vector], 14
    pop qword ptr [rip + pf_error]
    push rax
    mov rax, cr2
    mov qword ptr [rip + pf_cr2], rax
    pop rax
    iretq

nmi_handler:
    inc dword ptr [rip + nmis]
    iretq

.balign 8
gp_vector: .quad 0
gp_error:  .quad 0
pf_vector: .quad 0
pf_error:  .quad 0
pf_cr2:    .quad 0
nmis:      .quad 0
IDT_TABLE
