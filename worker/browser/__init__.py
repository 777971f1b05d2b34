"""One Chromium on this host: its flags and process (launcher), the user it
runs as and Chromium's sandbox (users), its cgroup (cgroups), and the reaper
of whatever a browser leaves behind. Nothing here knows about sessions."""
