# tests/catch2.cmake: finds Catch2 (v2 or v3) for the tests, in this order:
#
#   1. installed: find_package (Debian's catch2 is v2.13, newer systems ship v3);
#   2. Debian's or Ubuntu's catch2 package, downloaded into the build tree
#      without root (apt-get download, dpkg-deb -x), where apt exists;
#   3. Catch2 v3.5.4 from upstream, with FetchContent.
#
# 2 and 3 download. IOMODELS_CATCH2_DOWNLOAD=OFF (the tour preset) forbids
# that: without an installed Catch2 the tests are then not built, and
# configure says so in one line and goes on. A copy downloaded earlier into
# this build tree is used again, without downloading. If nothing works with
# downloads allowed, configure stops with one error that names the fix.
#
# Sets IOMODELS_CATCH2_FOUND, and Catch2_VERSION for tests/CMakeLists.txt.
# CI checks 2 on a machine that has 1 with -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON.

option(IOMODELS_CATCH2_DOWNLOAD
    "Download Catch2 for the tests when it is not installed (Debian's package, else upstream)" ON)

set(IOMODELS_CATCH2_FOUND FALSE)
set(catch2_downloads "${CMAKE_BINARY_DIR}/_deps")
set(catch2_debian_root "${catch2_downloads}/catch2-debian/root")
set(catch2_upstream_url "https://github.com/catchorg/Catch2/archive/refs/tags/v3.5.4.tar.gz")
set(catch2_upstream_sha256 "b7754b711242c167d8f60b890695347f90a1ebc95949a045385114165d606dbb")
set(catch2_upstream_archive "${catch2_downloads}/Catch2-v3.5.4.tar.gz")
set(catch2_failures "")  # why 2 and 3 did not work, for the error message

# 1. Installed.
find_package(Catch2 QUIET)
if(Catch2_FOUND)
    set(IOMODELS_CATCH2_FOUND TRUE)
    message(STATUS "Catch2 ${Catch2_VERSION}: ${Catch2_DIR}")
endif()

# 2. Debian's package: apt-get download needs no root. It reads the system's
# package lists; where there are none (a fresh container), it reads lists of
# its own, fetched into the build tree.
find_program(IOMODELS_APT_GET apt-get)
find_program(IOMODELS_DPKG_DEB dpkg-deb)
mark_as_advanced(IOMODELS_APT_GET IOMODELS_DPKG_DEB)
if(NOT IOMODELS_CATCH2_FOUND AND IOMODELS_CATCH2_DOWNLOAD AND NOT EXISTS "${catch2_debian_root}/usr"
   AND IOMODELS_APT_GET AND IOMODELS_DPKG_DEB)
    set(work "${catch2_downloads}/catch2-debian")
    file(MAKE_DIRECTORY "${work}/debs" "${work}/apt/lists/partial" "${work}/apt/cache/archives/partial")
    message(STATUS "Catch2 not installed: apt-get download catch2 (no root needed)")
    execute_process(COMMAND "${IOMODELS_APT_GET}" -q download catch2
        WORKING_DIRECTORY "${work}/debs" RESULT_VARIABLE result OUTPUT_QUIET ERROR_VARIABLE said)
    if(NOT result EQUAL 0)
        set(own_lists -o "Dir::State::Lists=${work}/apt/lists" -o "Dir::Cache=${work}/apt/cache"
                      -o Debug::NoLocking=1)
        execute_process(COMMAND "${IOMODELS_APT_GET}" -q ${own_lists} update
            RESULT_VARIABLE result OUTPUT_QUIET ERROR_VARIABLE said)
        if(result EQUAL 0)
            execute_process(COMMAND "${IOMODELS_APT_GET}" -q ${own_lists} download catch2
                WORKING_DIRECTORY "${work}/debs" RESULT_VARIABLE result OUTPUT_QUIET ERROR_VARIABLE said)
        endif()
    endif()
    file(GLOB debs "${work}/debs/catch2_*.deb")
    if(result EQUAL 0 AND debs)
        list(GET debs 0 deb)
        execute_process(COMMAND "${IOMODELS_DPKG_DEB}" -x "${deb}" "${catch2_debian_root}"
            RESULT_VARIABLE result ERROR_VARIABLE said)
    endif()
    if(NOT result EQUAL 0 OR NOT debs)
        string(STRIP "${said}" said)
        string(REGEX REPLACE "\n.*" "" said "${said}")
        if(NOT said)
            set(said "failed (exit ${result})")
        endif()
        list(APPEND catch2_failures "apt-get download catch2: ${said}")
        file(REMOVE_RECURSE "${catch2_debian_root}")
    endif()
endif()
if(NOT IOMODELS_CATCH2_FOUND AND EXISTS "${catch2_debian_root}/usr")
    # The build tree's copy, also where the installed one is ignored on purpose.
    set(CMAKE_DISABLE_FIND_PACKAGE_Catch2 FALSE)
    find_package(Catch2 CONFIG QUIET PATHS "${catch2_debian_root}/usr" NO_DEFAULT_PATH)
    unset(CMAKE_DISABLE_FIND_PACKAGE_Catch2)
    if(Catch2_FOUND)
        set(IOMODELS_CATCH2_FOUND TRUE)
        message(STATUS "Catch2 ${Catch2_VERSION}: Debian's package, in ${catch2_debian_root}")
    else()
        list(APPEND catch2_failures "the catch2 package in ${catch2_debian_root} has no CMake package file")
    endif()
endif()

# 3. Upstream. file(DOWNLOAD) reports a failure instead of stopping
# configure, so that one message can say what was tried.
if(NOT IOMODELS_CATCH2_FOUND AND IOMODELS_CATCH2_DOWNLOAD AND NOT EXISTS "${catch2_upstream_archive}")
    message(STATUS "Catch2: downloading v3.5.4 from upstream")
    file(DOWNLOAD "${catch2_upstream_url}" "${catch2_upstream_archive}.part"
        STATUS status TIMEOUT 120 INACTIVITY_TIMEOUT 20 TLS_VERIFY ON)
    list(GET status 0 code)
    list(GET status 1 text)
    if(code EQUAL 0)
        file(SHA256 "${catch2_upstream_archive}.part" sha256)
        if(sha256 STREQUAL catch2_upstream_sha256)
            file(RENAME "${catch2_upstream_archive}.part" "${catch2_upstream_archive}")
        else()
            list(APPEND catch2_failures "${catch2_upstream_url}: SHA-256 ${sha256}, expected ${catch2_upstream_sha256}")
        endif()
    else()
        list(APPEND catch2_failures "${catch2_upstream_url}: ${text}")
    endif()
    file(REMOVE "${catch2_upstream_archive}.part")
endif()
if(NOT IOMODELS_CATCH2_FOUND AND EXISTS "${catch2_upstream_archive}")
    include(FetchContent)
    FetchContent_Declare(Catch2
        URL "${catch2_upstream_archive}"
        URL_HASH "SHA256=${catch2_upstream_sha256}"
        DOWNLOAD_EXTRACT_TIMESTAMP TRUE)
    FetchContent_MakeAvailable(Catch2)
    list(APPEND CMAKE_MODULE_PATH "${catch2_SOURCE_DIR}/extras")
    set(Catch2_VERSION 3.5.4)
    set(IOMODELS_CATCH2_FOUND TRUE)
    message(STATUS "Catch2 3.5.4: upstream's source, built in ${catch2_BINARY_DIR}")
endif()

if(NOT IOMODELS_CATCH2_FOUND)
    if(IOMODELS_CATCH2_DOWNLOAD)
        list(JOIN catch2_failures "\n  " tried)
        message(FATAL_ERROR
            "Catch2, which the tests need, is not installed and could not be downloaded:\n  ${tried}\n"
            "Install it (sudo apt-get install catch2), or build the programs without "
            "the tests: cmake --workflow --preset tour")
    else()
        message(STATUS "Catch2 not installed: the tests are not built "
                       "(cmake --workflow --preset test downloads it, or: sudo apt-get install catch2)")
    endif()
endif()
