"""Fleets of clones from one golden image: `up`, `down` and `destroy` of a recipe's machines, and
`clone` for ad hoc clones of any golden volume.

What `up` makes for each machine: a thin qcow2 overlay NAME.qcow2 in the golden volume's pool
(its backing store is the golden volume; nothing is copied), its new data disks, a cloud-init
seed when the recipe has [cloud_init], and a domain whose imagebuilder metadata names all of
them. That metadata is how `up`, `down` and `destroy` know their own machines: a domain without
it, or made for another golden volume, is never touched.

Identity: the golden image is sysprepped by its build (empty machine-id; no SSH host keys, with a
unit that runs `ssh-keygen -A` before sshd), so each clone makes its own at first boot. The host
name is written into the overlays offline, every new machine of one run in ONE appliance launch
(the identity reset is applied again there, so a golden image from elsewhere is safe too). With
[cloud_init] the seed's local-hostname sets the name and no appliance starts at all (unless the
recipe turned those sysprep operations off). Offline is the default because it needs nothing in
the guest (cloud-init must be in the image, and costs every machine its boot stages), the name is
right from the first moment of the first boot (journal, DHCP request), and its cost does not grow
much with the number of machines: one launch for all of them (ten clones in about 30 s under TCG
here, most of it the launch).
"""
