"""Theory tools: PINN solvers (`jaxhep.theory.pinn`) and lattice field theory flows (`jaxhep.theory.lattice`)."""
