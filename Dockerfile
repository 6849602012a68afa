# The runtime image, from Debian 12 packages only: `docker-compose build` (see docker-compose.yml).
# Both stages install their packages from scripts/packages.txt, the list scripts/setup.sh installs
# on a development machine: the [build] section here, the [runtime] section in the image.

FROM debian:bookworm AS build
COPY scripts/packages.txt scripts/packages.sh /tmp/packages/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(sh /tmp/packages/packages.sh build) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY runtime runtime
COPY lualib lualib
COPY tests/CMakeLists.txt tests/CMakeLists.txt
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target microservice

FROM debian:bookworm-slim
COPY scripts/packages.txt scripts/packages.sh /tmp/packages/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(sh /tmp/packages/packages.sh runtime) \
 && rm -rf /var/lib/apt/lists/* /tmp/packages \
 && useradd --system --no-create-home --home-dir /app microservice
COPY --from=build /src/build/microservice /usr/local/bin/microservice
WORKDIR /app
COPY services services
COPY frontend frontend
# An empty services directory: the gateway-only role (docker-compose.yml's "http").
RUN mkdir /app/no-services
USER microservice
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/microservice"]
CMD ["--http", "0.0.0.0:5000", "services"]
