# heki-probe: issue the Heki hypercalls and report what the host answered.
# The ABI numbers come from heki-policy, through registers set by the VMM:
# In: rdi = hypercall number (KVM_HC_LOCK_CR_UPDATE), rsi = version-query flag,
#     rdx = CR4 bits to pin.
# Out: report 0/1 = version query rax (low/high), 2/3 = CR4 lock rax (low/high).
# KVM hypercall ABI: rax = nr, rbx = a0, rcx = a1, rdx = a2, result in rax.
.include "common.inc"

.text
start:
    mov r12, rdi
    mov r13, rsi
    mov r14, rdx

    mov rax, r12            # version query: (a0 = 0, a1 = 0, a2 = VERSION flag)
    xor ebx, ebx
    xor ecx, ecx
    mov rdx, r13
    vmcall
    mov r15, rax
    REPORT 0, r15d
    shr r15, 32
    REPORT 1, r15d

    mov rax, r12            # lock CR4: (a0 = 4, a1 = pin mask, a2 = 0)
    mov ebx, 4
    mov rcx, r14
    xor edx, edx
    vmcall
    mov r15, rax
    REPORT 2, r15d
    shr r15, 32
    REPORT 3, r15d
1:  hlt
    jmp 1b
