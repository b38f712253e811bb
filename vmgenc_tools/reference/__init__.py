"""The in-kernel-equivalent model of vmgenc(4) and the simulated VM it runs in.

Test and demo code only: production modules never import this package.
"""
