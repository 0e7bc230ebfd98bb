"""devdb's provisioning core: environments, refresh jobs, drivers, snapshots and the state store.

Nothing here imports `bot`; front ends call `provisioning.service.Service`.
"""
