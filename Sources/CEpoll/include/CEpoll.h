// Linux epoll and eventfd for the device simulator's loop threads (Glibc's Swift module does
// not export these headers).
#pragma once
#include <sys/epoll.h>
#include <sys/eventfd.h>
