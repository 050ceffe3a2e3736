#!/usr/bin/env bash
# System packages the tests use where a user would: ffmpeg (video files, RTSP client), Prometheus and
# promtool (a real scrape, config checks), GStreamer's RTSP server (a local RTSP camera). Installed with
# apt-get when missing and we are root; otherwise the tests that need them say what is missing and skip.
set -euo pipefail
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v promtool >/dev/null || need+=(prometheus)
command -v gst-launch-1.0 >/dev/null || need+=(gstreamer1.0-tools)
ldconfig -p 2>/dev/null | grep -q libgstrtspserver-1.0 || need+=(gstreamer1.0-rtsp)
gst-inspect-1.0 jpegenc >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-good)
gst-inspect-1.0 videotestsrc >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-base)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: missing system packages (${need[*]}); the tests that need them will skip" >&2
fi
